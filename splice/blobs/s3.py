"""Blobs as objects in an S3 bucket or an S3-compatible store, for the scaled-out mode.

boto3 finds the credentials as it always does: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
AWS_PROFILE and the shared config files, or the instance role. Only ``splice.blobs`` imports
this module, and only for an ``s3://`` URL, so the embedded default never loads boto3.

NOTE: botocore 1.36 and later send CRC32 checksum headers by default, which some
S3-compatible stores reject. For such a store, set AWS_REQUEST_CHECKSUM_CALCULATION to
``when_required`` in the environment.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from splice.blobs.errors import BlobNotFoundError
from splice.blobs.keys import check_key
from splice.blobs.s3_errors import ErrorTranslator

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# S3 takes at most 10,000 parts of at least 5 MiB (except the last) per upload. The part size
# doubles after every 1,000 parts, so one upload can exceed S3's 5 TiB object limit.
PART_SIZE = 8 * MIB
PARTS_PER_PART_SIZE = 1000
DELETE_BATCH = 1000  # the maximum number of keys in one DeleteObjects request
FILE_CHUNK = MIB
READ_BUFFER = MIB
# A store that does not accept the connection fails in seconds, not after botocore's 60 s.
CONNECT_TIMEOUT = 10.0


class S3BlobStore:
    """Stores each blob as the object ``PREFIX/KEY`` in ``bucket``.

    ``endpoint_url`` selects an S3-compatible store (MinIO, Ceph, moto), addressed by path.
    ``client`` is a ready boto3 S3 client, which then decides the endpoint and region.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: BaseClient | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = check_key(prefix, label="key prefix") if prefix else ""
        self._owns_client = client is None
        self._client = client if client is not None else _new_client(endpoint_url, region)
        self.endpoint_url: str = self._client.meta.endpoint_url
        self._errors = ErrorTranslator(bucket, self.endpoint_url)
        self._bucket_confirmed = False

    def __repr__(self) -> str:
        return (
            f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    def object_key(self, key: str) -> str:
        """Return the S3 object key of the blob ``key``."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, source: Path, key: str) -> str:
        """Upload ``source`` as the blob ``key``, delete ``source`` and return the key."""
        with source.open("rb") as file:
            self.write_stream(key, iter(lambda: file.read(FILE_CHUNK), b""))
        source.unlink()
        return key

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks as the blob ``key`` and return its size in bytes.

        A blob smaller than PART_SIZE is sent with one PutObject. A larger one is sent as a
        multipart upload, so memory contains about one part at a time. Any error, including
        one raised by ``chunks``, aborts the upload, and a blob already stored under ``key``
        stays as it was.
        """
        name = self.object_key(key)
        upload = _MultipartUpload(self, key, name)
        buffer = bytearray()
        size = 0
        try:
            for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= upload.next_part_size():
                    upload.add_part(buffer)
                    buffer.clear()
            if not upload.started:
                with self._errors.translate(key, name):
                    self._client.put_object(Bucket=self.bucket, Key=name, Body=buffer)
                return size
            if buffer:
                upload.add_part(buffer)
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        return size

    def read_bytes(self, key: str) -> bytes:
        name = self.object_key(key)
        with self._errors.translate(key, name):
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            with response["Body"] as body:
                return bytes(body.read())

    def open_read(self, key: str) -> BinaryIO:
        """Return a buffered reader over the object's body, which the caller must close."""
        name = self.object_key(key)
        with self._errors.translate(key, name):
            response = self._client.get_object(Bucket=self.bucket, Key=name)
        raw = _ObjectReader(response["Body"], self._errors, key, name)
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    def path(self, key: str) -> Path | None:
        """Return None: an object has no local path."""
        check_key(key)
        return None

    def exists(self, key: str) -> bool:
        # HeadObject returns 404 without a body, so a missing bucket looks like a missing key.
        # The first such response checks the bucket, so that a wrong bucket name is reported.
        name = self.object_key(key)
        try:
            with self._errors.translate(key, name, head=True):
                self._client.head_object(Bucket=self.bucket, Key=name)
        except BlobNotFoundError:
            if not self._bucket_confirmed:
                self.check()
            return False
        return True

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the blobs ``keys`` and return how many distinct keys were given.

        A key without a blob is no error, and it counts too, because S3 does not report
        whether an object existed.
        """
        names = list(dict.fromkeys(self.object_key(key) for key in keys))
        for start in range(0, len(names), DELETE_BATCH):
            self._delete_objects(names[start : start + DELETE_BATCH])
        return len(names)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with ``prefix + "/"`` and return how many."""
        folder = self.object_key(check_key(prefix, label="key prefix")) + "/"
        paginator = self._client.get_paginator("list_objects_v2")
        count = 0
        with self._errors.translate(None, None):
            # A page lists at most 1,000 keys, the maximum of one DeleteObjects request.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
                names = [item["Key"] for item in page.get("Contents", [])]
                if names:
                    self._delete_objects(names)
                    count += len(names)
        return count

    def check(self) -> None:
        """Raise BlobStoreError unless the bucket exists and the credentials may use it."""
        with self._errors.translate(None, None, head=True):
            self._client.head_bucket(Bucket=self.bucket)
        self._bucket_confirmed = True

    def close(self) -> None:
        """Close the connections of the client this store created (not of a given client)."""
        if self._owns_client:
            self._client.close()

    def _delete_objects(self, names: list[str]) -> None:
        with self._errors.translate(None, None):
            response = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": name} for name in names], "Quiet": True},
            )
        failures = response.get("Errors", [])
        if failures:
            raise self._errors.delete_failed(failures, len(names))


class _MultipartUpload:
    """One multipart upload, created when its first part is added."""

    def __init__(self, store: S3BlobStore, key: str, name: str) -> None:
        self._store = store
        self._key = key
        self._name = name
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    @property
    def started(self) -> bool:
        return self._upload_id is not None

    def next_part_size(self) -> int:
        return PART_SIZE * 2 ** (len(self._parts) // PARTS_PER_PART_SIZE)

    def add_part(self, data: bytearray) -> None:
        store = self._store
        with store._errors.translate(self._key, self._name):
            if self._upload_id is None:
                response = store._client.create_multipart_upload(
                    Bucket=store.bucket, Key=self._name
                )
                self._upload_id = response["UploadId"]
            number = len(self._parts) + 1
            response = store._client.upload_part(
                Bucket=store.bucket,
                Key=self._name,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})

    def complete(self) -> None:
        store = self._store
        with store._errors.translate(self._key, self._name):
            store._client.complete_multipart_upload(
                Bucket=store.bucket,
                Key=self._name,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    def abort(self) -> None:
        """Abort the upload so S3 drops its parts; a failure is logged, not raised."""
        if self._upload_id is None:
            return
        store = self._store
        try:
            store._client.abort_multipart_upload(
                Bucket=store.bucket, Key=self._name, UploadId=self._upload_id
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning(
                "aborting multipart upload %s of object %s in S3 bucket %s failed: %s; its "
                "parts stay stored until it is aborted, for example by a lifecycle rule "
                "with AbortIncompleteMultipartUpload",
                self._upload_id,
                self._name,
                store.bucket,
                error,
            )


class _ObjectReader(io.RawIOBase):
    """A raw stream over a boto3 StreamingBody, with read errors as BlobStoreError."""

    def __init__(self, body: Any, errors: ErrorTranslator, key: str, name: str) -> None:
        self._body = body
        self._errors = errors
        self._key = key
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        data = self._read(len(target))
        target[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._read(None)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()

    def _read(self, size: int | None) -> bytes:
        with self._errors.translate(self._key, self._name):
            return bytes(self._body.read(size))


def _new_client(endpoint_url: str | None, region: str | None) -> BaseClient:
    config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        # S3-compatible stores (MinIO, Ceph, moto) serve buckets as paths, not as sub-domains.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, config=config)
