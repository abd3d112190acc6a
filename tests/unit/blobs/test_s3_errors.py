"""S3 blob store errors and aborts, with botocore's Stubber in place of a server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from splice.blobs.errors import BlobNotFoundError, BlobStoreError
from splice.blobs.s3 import PART_SIZE, S3BlobStore

BUCKET = "splice-blobs"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """An S3 client with test credentials. The Stubber returns responses without sending."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="test-key-id",
        aws_secret_access_key="test-secret",
    )
    yield client
    client.close()


@pytest.fixture
def stubber(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def store(client: Any) -> S3BlobStore:
    return S3BlobStore(BUCKET, "prod", client=client)


def test_head_bucket_forbidden(store: S3BlobStore, stubber: Stubber) -> None:
    """A 403 without an error code reads as denied access, with what to check."""
    stubber.add_client_error("head_bucket", "403", http_status_code=403)
    with pytest.raises(BlobStoreError) as raised:
        store.check()
    message = str(raised.value)
    assert f"S3 denied access to S3 bucket {BUCKET!r} at http://127.0.0.1:9 (HTTP 403)" in message
    assert "check the AWS credentials" in message


def test_head_bucket_missing(store: S3BlobStore, stubber: Stubber) -> None:
    """A 404 on the bucket reads as a missing bucket."""
    stubber.add_client_error("head_bucket", "404", http_status_code=404)
    with pytest.raises(BlobStoreError, match=f"S3 bucket {BUCKET!r} not found"):
        store.check()


def test_exists_checks_bucket_once(store: S3BlobStore, stubber: Stubber) -> None:
    """The first missing key checks the bucket; later ones trust it."""
    stubber.add_client_error("head_object", "404", http_status_code=404)
    stubber.add_response("head_bucket", {}, {"Bucket": BUCKET})
    stubber.add_client_error("head_object", "404", http_status_code=404)
    assert not store.exists("a")
    assert not store.exists("b")


def test_get_missing_key(store: S3BlobStore, stubber: Stubber) -> None:
    """NoSuchKey becomes BlobNotFoundError with the blob key and the object key."""
    stubber.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    with pytest.raises(BlobNotFoundError) as raised:
        store.read_bytes("executions/e1/a")
    assert "executions/e1/a" == raised.value.key
    assert "no object 'prod/executions/e1/a'" in str(raised.value)


def test_put_denied(store: S3BlobStore, stubber: Stubber) -> None:
    """AccessDenied names the object, the bucket and the code."""
    stubber.add_client_error("put_object", "AccessDenied", "Access Denied", 403)
    with pytest.raises(BlobStoreError) as raised:
        store.write_stream("a", [b"x"])
    message = str(raised.value)
    assert f"S3 denied access to object 'prod/a' in S3 bucket {BUCKET!r}" in message
    assert "(AccessDenied)" in message


def test_put_server_error(store: S3BlobStore, stubber: Stubber) -> None:
    """Another error gives the HTTP status, the code and S3's message."""
    stubber.add_client_error("put_object", "InternalError", "We encountered an error", 500)
    with pytest.raises(BlobStoreError) as raised:
        store.write_stream("a", [b"x"])
    assert "failed with HTTP 500 InternalError: We encountered an error" in str(raised.value)


def test_failed_part_aborts(store: S3BlobStore, stubber: Stubber) -> None:
    """An S3 error on the second part aborts the upload and raises BlobStoreError."""
    stubber.add_response(
        "create_multipart_upload", {"UploadId": "upload-1"}, {"Bucket": BUCKET, "Key": "prod/a"}
    )
    stubber.add_response("upload_part", {"ETag": '"part-1"'})
    stubber.add_client_error("upload_part", "SlowDown", "Reduce your request rate", 503)
    stubber.add_response(
        "abort_multipart_upload", {}, {"Bucket": BUCKET, "Key": "prod/a", "UploadId": "upload-1"}
    )
    with pytest.raises(BlobStoreError, match="HTTP 503 SlowDown"):
        store.write_stream("a", [b"x" * PART_SIZE] * 3)


def test_failed_complete_aborts(store: S3BlobStore, stubber: Stubber) -> None:
    """An error completing the upload aborts it too."""
    stubber.add_response("create_multipart_upload", {"UploadId": "upload-1"})
    stubber.add_response("upload_part", {"ETag": '"part-1"'})
    stubber.add_client_error("complete_multipart_upload", "InvalidPart", "", 400)
    stubber.add_response("abort_multipart_upload", {})
    with pytest.raises(BlobStoreError, match="InvalidPart"):
        store.write_stream("a", [b"x" * PART_SIZE])


def test_complete_lists_parts(store: S3BlobStore, stubber: Stubber) -> None:
    """The upload completes with every part's number and ETag, in order."""
    stubber.add_response("create_multipart_upload", {"UploadId": "upload-1"})
    stubber.add_response("upload_part", {"ETag": '"part-1"'})
    stubber.add_response("upload_part", {"ETag": '"part-2"'})
    parts = [{"ETag": '"part-1"', "PartNumber": 1}, {"ETag": '"part-2"', "PartNumber": 2}]
    stubber.add_response(
        "complete_multipart_upload",
        {},
        {
            "Bucket": BUCKET,
            "Key": "prod/a",
            "UploadId": "upload-1",
            "MultipartUpload": {"Parts": parts},
        },
    )
    assert PART_SIZE + 5 == store.write_stream("a", [b"x" * PART_SIZE, b"y" * 5])


def test_delete_reports_failures(store: S3BlobStore, stubber: Stubber) -> None:
    """Per-object errors of DeleteObjects raise an error counting them, with the first."""
    stubber.add_response(
        "delete_objects",
        {"Errors": [{"Key": "prod/b", "Code": "AccessDenied", "Message": "Access Denied"}]},
    )
    with pytest.raises(BlobStoreError) as raised:
        store.delete(["a", "b"])
    message = str(raised.value)
    assert f"deleting 1 of 2 objects in S3 bucket {BUCKET!r} failed" in message
    assert "the first 'prod/b' with AccessDenied: Access Denied" in message
    assert "check the AWS credentials" in message


def test_part_size_doubles() -> None:
    """After every 1,000 parts the part size doubles, so 10,000 parts exceed 5 TiB."""
    from splice.blobs.s3 import _MultipartUpload

    upload = _MultipartUpload(None, "a", "a")  # type: ignore[arg-type]
    sizes = []
    for count in (0, 999, 1000, 2500, 9999):
        upload._parts = [{}] * count
        sizes.append(upload.next_part_size())
    assert [PART_SIZE, PART_SIZE, 2 * PART_SIZE, 4 * PART_SIZE, 512 * PART_SIZE] == sizes
    total = sum(PART_SIZE * 2 ** (number // 1000) for number in range(10_000))
    assert total > 5 * 1024**4
