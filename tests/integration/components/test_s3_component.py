"""Tests of s3.list, s3.get and s3.put against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from splice.sdk import ActionContext, ActionError
from splice.testing import invoke_action

PAGINATED_OBJECTS = 1200


@pytest.fixture
def connection(moto_url: str) -> dict[str, Any]:
    """An aws connection to the moto server; moto accepts any credentials."""
    return {
        "type": "aws",
        "access_key_id": "test-key-id",
        "secret_access_key": "test-secret",
        "region": "us-east-1",
        "endpoint_url": moto_url,
    }


@pytest.fixture
def admin(connection: dict[str, Any]) -> Iterator[Any]:
    """A boto3 client that prepares buckets and checks what the actions stored."""
    client = boto3.client(
        "s3",
        endpoint_url=connection["endpoint_url"],
        region_name=connection["region"],
        aws_access_key_id=connection["access_key_id"],
        aws_secret_access_key=connection["secret_access_key"],
    )
    yield client
    client.close()


@pytest.fixture
def bucket(admin: Any) -> str:
    """A new empty bucket."""
    name = f"splice-test-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    return name


def s3(action: str, context: ActionContext, connection: dict[str, Any], **inputs: Any) -> Any:
    return invoke_action(f"s3.{action}", context=context, connection=connection, **inputs)


def test_put_then_get_bytes(
    context: ActionContext, connection: dict[str, Any], bucket: str
) -> None:
    """Bytes put under a key are returned unchanged by get."""
    content = bytes(range(256)) * 10
    stored = s3("put", context, connection, bucket=bucket, key="in/a.bin", content=content)
    assert {"bucket": bucket, "key": "in/a.bin", "size": 2560} == {
        name: stored[name] for name in ("bucket", "key", "size")
    }
    assert content == s3("get", context, connection, bucket=bucket, key="in/a.bin")


def test_put_text_get_text(context: ActionContext, connection: dict[str, Any], bucket: str) -> None:
    """Text is stored as UTF-8 and read back in text mode."""
    s3("put", context, connection, bucket=bucket, key="note.txt", content="Größe")
    text = s3("get", context, connection, bucket=bucket, key="note.txt", mode="text")
    assert "Größe" == text


def test_put_content_type(
    context: ActionContext, connection: dict[str, Any], bucket: str, admin: Any
) -> None:
    """The content type is guessed from the key, or taken from the input."""
    s3("put", context, connection, bucket=bucket, key="a.xml", content="<a/>")
    s3("put", context, connection, bucket=bucket, key="b", content=b"x", content_type="image/png")
    assert "application/xml" == admin.head_object(Bucket=bucket, Key="a.xml")["ContentType"]
    assert "image/png" == admin.head_object(Bucket=bucket, Key="b")["ContentType"]


def test_put_etag(
    context: ActionContext, connection: dict[str, Any], bucket: str, admin: Any
) -> None:
    """put returns the object's ETag without quotes."""
    stored = s3("put", context, connection, bucket=bucket, key="a", content=b"x")
    assert admin.head_object(Bucket=bucket, Key="a")["ETag"].strip('"') == stored["etag"]


def test_list_prefix(context: ActionContext, connection: dict[str, Any], bucket: str) -> None:
    """list returns the objects under the prefix with their size."""
    for key in ("in/b.xml", "in/a.xml", "out/c.xml"):
        s3("put", context, connection, bucket=bucket, key=key, content=b"12345")
    listing = s3("list", context, connection, bucket=bucket, prefix="in/")
    assert ["in/a.xml", "in/b.xml"] == [item["key"] for item in listing["objects"]]
    assert [5, 5] == [item["size"] for item in listing["objects"]]
    assert 2 == listing["count"]


def test_list_fields(context: ActionContext, connection: dict[str, Any], bucket: str) -> None:
    """Each listed object has key, size, an ISO-8601 modification time and an ETag."""
    stored = s3("put", context, connection, bucket=bucket, key="a", content=b"x")
    item = s3("list", context, connection, bucket=bucket)["objects"][0]
    assert ["etag", "key", "modified", "size"] == sorted(item)
    assert stored["etag"] == item["etag"]
    assert item["modified"].endswith("+00:00")


def test_list_paginates(
    context: ActionContext, connection: dict[str, Any], bucket: str, admin: Any
) -> None:
    """A listing of more than one page (1,000 keys) returns every object."""
    keys = [f"invoices/{index:05d}.xml" for index in range(PAGINATED_OBJECTS)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: admin.put_object(Bucket=bucket, Key=key, Body=b"<a/>"), keys))
    listing = s3("list", context, connection, bucket=bucket, prefix="invoices/")
    assert PAGINATED_OBJECTS == listing["count"]
    assert keys == [item["key"] for item in listing["objects"]]


def test_get_missing_key(context: ActionContext, connection: dict[str, Any], bucket: str) -> None:
    """A missing key fails with the key and bucket, not retryable."""
    with pytest.raises(ActionError) as raised:
        s3("get", context, connection, bucket=bucket, key="nope.xml")
    assert f"key 'nope.xml' not found in bucket '{bucket}'" in str(raised.value)
    assert raised.value.retryable is False


def test_list_missing_bucket(context: ActionContext, connection: dict[str, Any]) -> None:
    """A missing bucket fails with the bucket's name."""
    with pytest.raises(ActionError) as raised:
        s3("list", context, connection, bucket="splice-no-such-bucket")
    assert "bucket 'splice-no-such-bucket' not found" in str(raised.value)


def test_client_reused(context: ActionContext, connection: dict[str, Any], bucket: str) -> None:
    """Steps with the same endpoint and credentials share one client."""
    s3("put", context, connection, bucket=bucket, key="a", content=b"x")
    s3("get", context, connection, bucket=bucket, key="a")
    s3("list", context, connection, bucket=bucket)
    assert 1 == len([key for key in context.resources if key.startswith("s3.client:")])


def test_client_key_hides_secret(
    context: ActionContext, connection: dict[str, Any], bucket: str
) -> None:
    """The resource key of a client does not contain the secret access key."""
    s3("list", context, connection, bucket=bucket)
    assert [] == [key for key in context.resources if "test-secret" in key]


def test_connection_wrong_type(context: ActionContext, moto_url: str) -> None:
    """A connection of another type fails with its type."""
    with pytest.raises(ActionError) as raised:
        s3("list", context, {"type": "bearer", "token": "t"}, bucket="b", endpoint_url=moto_url)
    assert "connection has type 'bearer'; s3 steps need a connection of type aws" in str(
        raised.value
    )


def test_connection_missing_field(context: ActionContext, connection: dict[str, Any]) -> None:
    """An aws connection without its secret fails with the field's name."""
    incomplete = {key: value for key, value in connection.items() if key != "secret_access_key"}
    with pytest.raises(ActionError) as raised:
        s3("list", context, incomplete, bucket="b")
    assert "missing the field 'secret_access_key'" in str(raised.value)
