"""Behaviour of the S3 blob store alone: object layout, multipart uploads, batches, errors."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from splice.blobs import BlobNotFoundError, BlobStoreError, open_blob_store
from splice.blobs.s3 import S3BlobStore
from tests.integration.moto_server import free_port

from .conftest import REGION, STORE_PREFIX

MIB = 1024 * 1024
MANY_KEYS = 1010  # more than one DeleteObjects batch and one ListObjectsV2 page


class StreamBroke(Exception):
    """The error the failing chunk iterator raises."""


def failing_chunks(size_before_error: int) -> Iterator[bytes]:
    for _ in range(size_before_error // MIB):
        yield b"x" * MIB
    raise StreamBroke("the client disconnected")


def object_keys(s3_admin: Any, bucket: str) -> list[str]:
    pages = s3_admin.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def put_objects(s3_admin: Any, bucket: str, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: s3_admin.put_object(Bucket=bucket, Key=name, Body=b"1"), names))


def test_keys_below_prefix(s3_store: S3BlobStore, s3_admin: Any, bucket: str) -> None:
    """A blob key becomes the object key PREFIX/KEY."""
    s3_store.write_stream("executions/e1/output.bin", [b"x"])
    assert [f"{STORE_PREFIX}/executions/e1/output.bin"] == object_keys(s3_admin, bucket)


def test_store_without_prefix(moto_url: str, s3_admin: Any, bucket: str) -> None:
    """Without a prefix the object key is the blob key."""
    store = S3BlobStore(bucket, endpoint_url=moto_url, region=REGION)
    try:
        store.write_stream("executions/e1/output.bin", [b"x"])
    finally:
        store.close()
    assert ["executions/e1/output.bin"] == object_keys(s3_admin, bucket)


def test_path_is_none(s3_store: S3BlobStore) -> None:
    """An object has no local path."""
    s3_store.write_stream("executions/e1/output.bin", [b"x"])
    assert s3_store.path("executions/e1/output.bin") is None


def test_small_blob_single_put(s3_store: S3BlobStore, s3_admin: Any, bucket: str) -> None:
    """A blob below the part size is one PutObject, whose ETag has no part count."""
    s3_store.write_stream("bodies/small", [b"a" * MIB] * 7)
    head = s3_admin.head_object(Bucket=bucket, Key=f"{STORE_PREFIX}/bodies/small")
    assert 7 * MIB == head["ContentLength"]
    assert "-" not in head["ETag"]


def test_large_blob_multipart(s3_store: S3BlobStore, s3_admin: Any, bucket: str) -> None:
    """20 MiB in 1 MiB chunks become a multipart upload of 8, 8 and 4 MiB parts."""
    s3_store.write_stream("bodies/large", [b"a" * MIB] * 20)
    name = f"{STORE_PREFIX}/bodies/large"
    head = s3_admin.head_object(Bucket=bucket, Key=name)
    assert 20 * MIB == head["ContentLength"]
    assert head["ETag"].strip('"').endswith("-3")
    first_part = s3_admin.head_object(Bucket=bucket, Key=name, PartNumber=1)
    assert 8 * MIB == first_part["ContentLength"]


def test_put_file_large(s3_store: S3BlobStore, tmp_path: Path) -> None:
    """put_file uploads a file larger than a part and then removes it."""
    source = tmp_path / "result.bin"
    content = bytes(range(256)) * (40 * 1024)  # 10 MiB
    source.write_bytes(content)
    s3_store.put_file(source, "executions/e1/result.bin")
    assert content == s3_store.read_bytes("executions/e1/result.bin")
    assert not source.exists()


def test_failed_stream_aborts_upload(s3_store: S3BlobStore, s3_admin: Any, bucket: str) -> None:
    """An iterator that raises after two parts aborts the multipart upload."""
    with pytest.raises(StreamBroke):
        s3_store.write_stream("bodies/broken", failing_chunks(20 * MIB))
    uploads = s3_admin.list_multipart_uploads(Bucket=bucket)
    assert [] == uploads.get("Uploads", [])
    assert [] == object_keys(s3_admin, bucket)


def test_failed_abort_is_logged(
    moto_url: str, bucket: str, s3_admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """When the abort fails too, a warning names the upload and the stream's error propagates."""
    client = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)

    def fail_abort(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "down"}}, "Abort")

    client.abort_multipart_upload = fail_abort
    store = S3BlobStore(bucket, client=client)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="splice.blobs.s3"),
            pytest.raises(StreamBroke),
        ):
            store.write_stream("bodies/broken", failing_chunks(10 * MIB))
    finally:
        client.close()
    assert 1 == len(caplog.records)
    message = caplog.records[0].getMessage()
    assert "aborting multipart upload" in message
    assert "object bodies/broken in S3 bucket" in message
    assert "AbortIncompleteMultipartUpload" in message
    assert 1 == len(s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_delete_in_batches(moto_url: str, s3_admin: Any, bucket: str) -> None:
    """delete sends at most 1,000 keys per DeleteObjects request."""
    names = [f"k/{number:04d}" for number in range(MANY_KEYS)]
    put_objects(s3_admin, bucket, names)
    client = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    batches: list[int] = []
    client.meta.events.register(
        "before-parameter-build.s3.DeleteObjects",
        lambda params, **_: batches.append(len(params["Delete"]["Objects"])),
    )
    store = S3BlobStore(bucket, client=client)
    try:
        count = store.delete(names)
    finally:
        client.close()
    assert MANY_KEYS == count
    assert [1000, MANY_KEYS - 1000] == batches
    assert [] == object_keys(s3_admin, bucket)


def test_delete_prefix_many_pages(s3_store: S3BlobStore, s3_admin: Any, bucket: str) -> None:
    """delete_prefix follows every page of the listing."""
    names = [f"{STORE_PREFIX}/executions/e1/{number:04d}" for number in range(MANY_KEYS)]
    put_objects(s3_admin, bucket, [*names, f"{STORE_PREFIX}/executions/e10/kept"])
    assert MANY_KEYS == s3_store.delete_prefix("executions/e1")
    assert [f"{STORE_PREFIX}/executions/e10/kept"] == object_keys(s3_admin, bucket)


def test_open_blob_store_s3_url(moto_url: str, s3_admin: Any, bucket: str) -> None:
    """An s3 URL opens a store on that bucket, prefix, endpoint and region."""
    store = open_blob_store(
        f"s3://{bucket}/tenant-a/blobs?endpoint_url={moto_url}&region={REGION}",
        local_root=Path("/nonexistent-unused"),
    )
    try:
        store.write_stream("executions/e1/output.bin", [b"x"])
        assert b"x" == store.read_bytes("executions/e1/output.bin")
    finally:
        store.close()
    assert ["tenant-a/blobs/executions/e1/output.bin"] == object_keys(s3_admin, bucket)


@pytest.fixture
def missing_bucket_store(moto_url: str, aws_environment: None) -> Iterator[S3BlobStore]:
    """A store on a bucket that does not exist."""
    store = S3BlobStore(f"splice-missing-{uuid.uuid4().hex[:8]}", endpoint_url=moto_url)
    yield store
    store.close()


@pytest.mark.parametrize(
    "operation",
    [
        lambda store: store.check(),
        lambda store: store.write_stream("a", [b"x"]),
        lambda store: store.write_stream("a", [b"x" * MIB] * 9),
        lambda store: store.read_bytes("a"),
        lambda store: store.open_read("a"),
        lambda store: store.exists("a"),
        lambda store: store.delete(["a"]),
        lambda store: store.delete_prefix("a"),
    ],
    ids=[
        "check",
        "put",
        "multipart",
        "read_bytes",
        "open_read",
        "exists",
        "delete",
        "delete_prefix",
    ],
)
def test_missing_bucket(missing_bucket_store: S3BlobStore, operation: Any) -> None:
    """Every operation on a missing bucket raises an error naming the bucket and the fix."""
    with pytest.raises(BlobStoreError) as raised:
        operation(missing_bucket_store)
    message = str(raised.value)
    assert f"S3 bucket {missing_bucket_store.bucket!r} not found" in message
    assert "create it, or set SPLICE_BLOB_URL to an existing bucket" in message
    assert not isinstance(raised.value, BlobNotFoundError)


def test_unreachable_endpoint(aws_environment: None) -> None:
    """A closed port on 127.0.0.1 gives an error naming the endpoint and what to check."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3BlobStore("splice-blobs", endpoint_url=endpoint)
    try:
        with pytest.raises(BlobStoreError) as raised:
            store.write_stream("executions/e1/output.bin", [b"x"])
    finally:
        store.close()
    message = str(raised.value)
    assert f"S3 endpoint {endpoint} is unreachable" in message
    assert "check that the store runs at that address" in message
    assert "executions/e1/output.bin" == raised.value.key


def test_denied_access(moto_auth_url: str, aws_environment: None) -> None:
    """Credentials the server does not know give an error naming the bucket and credentials."""
    store = S3BlobStore("splice-blobs", endpoint_url=moto_auth_url)
    try:
        with pytest.raises(BlobStoreError) as raised:
            store.write_stream("executions/e1/output.bin", [b"x"])
    finally:
        store.close()
    message = str(raised.value)
    assert "S3 denied access to object 'executions/e1/output.bin'" in message
    assert "in S3 bucket 'splice-blobs'" in message
    assert "check the AWS credentials" in message


def test_no_credentials(
    moto_url: str, aws_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without any credentials the error names the variables to set."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3BlobStore("splice-blobs", endpoint_url=moto_url, region=REGION)
    try:
        with pytest.raises(BlobStoreError) as raised:
            store.check()
    finally:
        store.close()
    assert "no usable AWS credentials for S3 bucket 'splice-blobs'" in str(raised.value)
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE" in str(raised.value)
