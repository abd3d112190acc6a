"""Translation of boto3's errors into BlobStoreErrors that name the bucket, key and fix."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as EndpointError

from splice.blobs.errors import BlobNotFoundError, BlobStoreError

DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
CREDENTIALS_FIX = (
    "check the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
    "the instance role) and the bucket policy"
)


class ErrorTranslator:
    """Translator of boto3 errors about one bucket into BlobStoreErrors."""

    def __init__(self, bucket: str, endpoint_url: str) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url

    @contextmanager
    def translate(self, key: str | None, name: str | None, *, head: bool = False) -> Iterator[None]:
        """Raise a BlobStoreError in place of a boto3 error about the object ``name``.

        ``key`` is the blob key, ``name`` its object key, and both are None for a request
        about the bucket. ``head`` marks a HEAD request, whose 404 response has no error code.
        It means a missing object when ``key`` is given, else a missing bucket.
        """
        try:
            yield
        except ClientError as error:
            raise self._client_error(error.response, key, name, head) from error
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise BlobStoreError(
                f"no usable AWS credentials for S3 bucket {self.bucket!r} ({error}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                key=key,
            ) from error
        except EndpointError as error:
            raise BlobStoreError(
                f"S3 endpoint {self.endpoint_url} is unreachable ({error}); check that the "
                "store runs at that address (the endpoint_url of SPLICE_BLOB_URL) and that "
                "the network reaches it",
                key=key,
            ) from error
        except BotoCoreError as error:
            raise BlobStoreError(
                f"S3 request for {self._where(name)} failed: {error}", key=key
            ) from error

    def delete_failed(self, failures: Sequence[Mapping[str, Any]], count: int) -> BlobStoreError:
        """Describe the per-object errors of one DeleteObjects request of ``count`` keys."""
        first = failures[0]
        code = str(first.get("Code", ""))
        fix = CREDENTIALS_FIX if code in DENIED_CODES else "retry the deletion"
        return BlobStoreError(
            f"deleting {len(failures)} of {count} objects in S3 bucket {self.bucket!r} "
            f"failed, the first {first.get('Key')!r} with {code}: {first.get('Message')}; "
            f"{fix}"
        )

    def _client_error(
        self, response: Mapping[str, Any], key: str | None, name: str | None, head: bool
    ) -> BlobStoreError:
        details = response.get("Error", {})
        code = str(details.get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        head_missing = head and code in ("404", "NotFound")
        if code == "NoSuchBucket" or (head_missing and key is None):
            return BlobStoreError(
                f"S3 bucket {self.bucket!r} not found at {self.endpoint_url}; create it, or "
                "set SPLICE_BLOB_URL to an existing bucket",
                key=key,
            )
        if key is not None and (code == "NoSuchKey" or head_missing):
            return BlobNotFoundError(
                f"blob {key!r} not found: no object {name!r} in S3 bucket {self.bucket!r} "
                f"at {self.endpoint_url}; it was never written or has been deleted",
                key=key,
            )
        if code in DENIED_CODES or status == 403:
            reason = code if code and not code.isdigit() else "HTTP 403"
            return BlobStoreError(
                f"S3 denied access to {self._where(name)} at {self.endpoint_url} "
                f"({reason}); {CREDENTIALS_FIX}",
                key=key,
            )
        message = details.get("Message") or code
        return BlobStoreError(
            f"S3 request for {self._where(name)} at {self.endpoint_url} failed with HTTP "
            f"{status} {code}: {message}",
            key=key,
        )

    def _where(self, name: str | None) -> str:
        if name is None:
            return f"S3 bucket {self.bucket!r}"
        return f"object {name!r} in S3 bucket {self.bucket!r}"
