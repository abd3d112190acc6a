"""The s3 component: list, get and put objects in S3 or an S3-compatible store.

boto3 is imported on the first s3 step, not when the component loads, because importing it
takes a noticeable share of an execution's start-up.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from splice.components.files import decode_text
from splice.sdk import ActionContext, ActionError, Component, Input

if TYPE_CHECKING:
    from botocore.client import BaseClient

component = Component("s3", description="Objects in S3 or an S3-compatible store")

CLIENT_RESOURCE_PREFIX = "s3.client:"
Result = TypeVar("Result")

_LOCATION_INPUTS = {
    "endpoint_url": Input("string", description="URL of an S3-compatible store; AWS S3 when null"),
    "region": Input("string", description="Region; from the connection or boto3 when null"),
    "connection": Input(
        "connection", description="An aws connection; boto3's default credentials when null"
    ),
}


@component.action(
    name="list",
    inputs={
        "bucket": Input("string", required=True, description="Bucket name"),
        "prefix": Input("string", default="", description="Only keys that start with this"),
        **_LOCATION_INPUTS,
    },
    description="List the objects of a bucket under a key prefix",
    output="object with objects (key, size, modified, etag) in key order, and count",
)
def list_objects(
    context: ActionContext,
    *,
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
    connection: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """List every object under ``prefix``, following the pages of ListObjectsV2."""
    client = _client(context, endpoint_url, region, connection)

    def list_pages() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            found.extend(_describe(item) for item in page.get("Contents", []))
        return found

    objects = _call(list_pages, bucket=bucket, key=None)
    return {"objects": objects, "count": len(objects)}


def _describe(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": item["Key"],
        "size": item["Size"],
        "modified": item["LastModified"].isoformat(),
        "etag": item.get("ETag", "").strip('"'),
    }


@component.action(
    inputs={
        "bucket": Input("string", required=True, description="Bucket name"),
        "key": Input("string", required=True, description="Object key"),
        "mode": Input(
            "string", default="bytes", choices=("bytes", "text"), description="Return bytes or text"
        ),
        "encoding": Input("string", default="utf-8", description="Encoding of the text"),
        **_LOCATION_INPUTS,
    },
    description="Get an object's content as bytes or text",
    output="bytes, or string when mode is text",
)
def get(
    context: ActionContext,
    *,
    bucket: str,
    key: str,
    mode: str,
    encoding: str,
    endpoint_url: str | None,
    region: str | None,
    connection: Mapping[str, Any] | None,
) -> bytes | str:
    """Get the object ``key``; in text mode a UTF-8 byte order mark is dropped."""
    client = _client(context, endpoint_url, region, connection)

    def read() -> bytes:
        response = client.get_object(Bucket=bucket, Key=key)
        with response["Body"] as stream:
            return bytes(stream.read())

    data = _call(read, bucket=bucket, key=key)
    if mode == "bytes":
        return data
    return decode_text(data, encoding, source=f"s3://{bucket}/{key}")


@component.action(
    inputs={
        "bucket": Input("string", required=True, description="Bucket name"),
        "key": Input("string", required=True, description="Object key"),
        "content": Input("string|bytes", required=True, description="What to store"),
        "content_type": Input(
            "string", description="Content-Type; guessed from the key's extension when null"
        ),
        **_LOCATION_INPUTS,
    },
    description="Put an object, replacing any object with the same key",
    output="object with bucket, key, size in bytes and etag",
)
def put(
    context: ActionContext,
    *,
    bucket: str,
    key: str,
    content: str | bytes,
    content_type: str | None,
    endpoint_url: str | None,
    region: str | None,
    connection: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Store ``content`` under ``key``; a string is stored as UTF-8."""
    client = _client(context, endpoint_url, region, connection)
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    media_type = content_type or _guess_content_type(key, content)

    def write() -> Mapping[str, Any]:
        return client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=media_type)

    response = _call(write, bucket=bucket, key=key)
    etag = str(response.get("ETag", "")).strip('"')
    return {"bucket": bucket, "key": key, "size": len(data), "etag": etag}


def _guess_content_type(key: str, content: str | bytes) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=False)
    if guessed is not None:
        return guessed
    return "text/plain; charset=utf-8" if isinstance(content, str) else "application/octet-stream"


def _client(
    context: ActionContext,
    endpoint_url: str | None,
    region: str | None,
    connection: Mapping[str, Any] | None,
) -> BaseClient:
    """Return the execution's client for this endpoint and these credentials."""
    credentials = _credentials(connection)
    endpoint_url = endpoint_url or _optional_field(connection, "endpoint_url")
    region = region or _optional_field(connection, "region")
    resource = _resource_key(endpoint_url, region, credentials)
    client = context.resources.get(resource)
    if client is None:
        client = _new_client(endpoint_url, region, credentials)
        context.resources[resource] = client
    return client


def _credentials(connection: Mapping[str, Any] | None) -> dict[str, str]:
    """Return boto3 session arguments; empty when boto3's default chain applies."""
    if connection is None:
        return {}
    if connection.get("type") != "aws":
        raise ActionError(
            f"connection has type {connection.get('type')!r}; s3 steps need a connection "
            "of type aws",
            retryable=False,
        )
    credentials = {
        "aws_access_key_id": _required_field(connection, "access_key_id"),
        "aws_secret_access_key": _required_field(connection, "secret_access_key"),
    }
    token = _optional_field(connection, "session_token")
    if token is not None:
        credentials["aws_session_token"] = token
    return credentials


def _required_field(connection: Mapping[str, Any], name: str) -> str:
    value = connection.get(name)
    if not isinstance(value, str) or not value:
        raise ActionError(
            f"aws connection is missing the field {name!r}; set it in the connection's "
            "config value",
            retryable=False,
        )
    return value


def _optional_field(connection: Mapping[str, Any] | None, name: str) -> str | None:
    value = (connection or {}).get(name)
    return value if isinstance(value, str) and value else None


def _resource_key(
    endpoint_url: str | None, region: str | None, credentials: Mapping[str, str]
) -> str:
    # The key contains a digest of the credentials in place of them, so it contains no secret.
    digest = hashlib.sha256(repr(sorted(credentials.items())).encode("utf-8")).hexdigest()
    return f"{CLIENT_RESOURCE_PREFIX}{endpoint_url or ''}|{region or ''}|{digest[:16]}"


def _new_client(
    endpoint_url: str | None, region: str | None, credentials: Mapping[str, str]
) -> BaseClient:
    import boto3
    from botocore.config import Config

    # S3-compatible stores (MinIO, Ceph, moto) serve buckets as paths, not as sub-domains.
    config = Config(s3={"addressing_style": "path"}) if endpoint_url else None
    session = boto3.session.Session(region_name=region, **credentials)
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _call(operation: Callable[[], Result], *, bucket: str, key: str | None) -> Result:
    """Run ``operation`` and turn boto3's failures into ActionErrors that name the object."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = f"bucket {bucket!r}" if key is None else f"key {key!r} in bucket {bucket!r}"
    try:
        return operation()
    except NoCredentialsError as error:
        raise ActionError(
            "no AWS credentials found; give the step an aws connection", retryable=False
        ) from error
    except ClientError as error:
        raise _client_error(error, bucket, key, where) from error
    except BotoCoreError as error:
        raise ActionError(f"S3 request for {where} failed: {error}") from error


def _client_error(error: Any, bucket: str, key: str | None, where: str) -> ActionError:
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return ActionError(f"bucket {bucket!r} not found; check the bucket input", retryable=False)
    if code in ("NoSuchKey", "404"):
        return ActionError(
            f"key {key!r} not found in bucket {bucket!r}; check the key input", retryable=False
        )
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return ActionError(
            f"S3 denied access to {where} ({code}); check the connection's credentials and "
            "the bucket policy",
            retryable=False,
        )
    message = details.get("Message") or code
    return ActionError(
        f"S3 request for {where} failed with HTTP {status} {code}: {message}",
        retryable=status is None or status >= 500,
    )
