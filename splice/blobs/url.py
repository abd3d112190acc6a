"""The blob store URL of the ``SPLICE_BLOB_URL`` setting: parsed and checked without boto3."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from splice.blobs.keys import check_key
from splice.errors import SettingError

SETTING = "SPLICE_BLOB_URL"
ACCEPTED_FORMS = (
    "leave it unset for the folder SPLICE_BLOB_DIR, or use file:///ABSOLUTE/FOLDER "
    "or s3://BUCKET[/PREFIX][?endpoint_url=http://HOST:PORT&region=REGION]"
)
S3_PARAMETERS = ("endpoint_url", "region")
CREDENTIALS_FIX = (
    "remove them from the URL: the S3 store takes its credentials from AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role, as boto3 does"
)
# botocore's own rule for bucket names, looser than AWS's so that S3-compatible stores work.
BUCKET_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


@dataclass(frozen=True)
class LocalLocation:
    """Blobs in a local folder; ``folder`` is None for the default folder."""

    folder: Path | None = None


@dataclass(frozen=True)
class S3Location:
    """Blobs in an S3 bucket, below ``prefix`` (empty for the whole bucket)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # None: AWS S3 itself
    region: str | None = None  # None: boto3's configured region


def parse_blob_url(url: str | None) -> LocalLocation | S3Location:
    """Parse a ``SPLICE_BLOB_URL`` value; raise SettingError naming the accepted forms.

    None, an empty or a blank value selects the default local folder.
    """
    if url is None or not url.strip():
        return LocalLocation()
    try:
        parts = urlsplit(url.strip())
    except ValueError as error:
        raise _invalid(url, f"is not a valid URL ({error})") from None
    if parts.scheme == "file":
        return _parse_file(url, parts.netloc, parts.path, parts.query, parts.fragment)
    if parts.scheme == "s3":
        return _parse_s3(url, parts.netloc, parts.path, parts.query, parts.fragment)
    scheme = f"the scheme {parts.scheme + ':'!r}" if parts.scheme else "a missing scheme"
    raise _invalid(url, f"has {scheme}, which is not a blob store")


def _parse_file(url: str, host: str, path: str, query: str, fragment: str) -> LocalLocation:
    if host not in ("", "localhost"):
        raise _invalid(url, f"names the host {host!r}, but a file URL must name a local folder")
    if query or fragment:
        raise _invalid(url, "has a query or a fragment, which a file URL does not take")
    folder = unquote(path)
    if not folder.startswith("/") or folder == "/":
        raise _invalid(url, "needs an absolute folder path other than '/' after file://")
    return LocalLocation(Path(folder))


def _parse_s3(url: str, netloc: str, path: str, query: str, fragment: str) -> S3Location:
    if "@" in netloc:
        raise _invalid(url, "contains credentials", fix=CREDENTIALS_FIX)
    if ":" in netloc:
        raise _invalid(
            url,
            "names a port, but an s3 URL names a bucket",
            fix="give the store's address as ?endpoint_url=http://HOST:PORT",
        )
    if not netloc:
        raise _invalid(url, "has no bucket name after s3://")
    if not BUCKET_NAME.fullmatch(netloc):
        raise _invalid(
            url,
            f"names the bucket {netloc!r}, which is not a valid bucket name",
            fix="use 1 to 255 letters, digits, '.', '-' or '_' after s3://",
        )
    if fragment:
        raise _invalid(url, "has a fragment, which an s3 URL does not take")
    prefix = _parse_prefix(url, path)
    parameters = _parse_parameters(url, query)
    return S3Location(
        bucket=netloc,
        prefix=prefix,
        endpoint_url=parameters.get("endpoint_url"),
        region=parameters.get("region"),
    )


def _parse_prefix(url: str, path: str) -> str:
    prefix = unquote(path).strip("/")
    if not prefix:
        return ""
    try:
        return check_key(prefix, label="key prefix")
    except ValueError as error:
        raise _invalid(url, f"has an invalid path: {error}") from None


def _parse_parameters(url: str, query: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in S3_PARAMETERS:
            raise _invalid(
                url,
                f"has the unknown parameter {name!r}",
                fix=f"use only {' and '.join(S3_PARAMETERS)}; {ACCEPTED_FORMS}",
            )
        if name in parameters:
            raise _invalid(url, f"gives the parameter {name!r} more than once")
        if not value.strip():
            raise _invalid(url, f"gives the parameter {name!r} an empty value")
        parameters[name] = value.strip()
    if "endpoint_url" in parameters:
        _check_endpoint(url, parameters["endpoint_url"])
    return parameters


def _check_endpoint(url: str, endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as error:
        raise _invalid(url, f"has an invalid endpoint_url ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(
            url,
            "has an endpoint_url that is not an http:// or https:// URL with a host",
            fix="set endpoint_url to the store's address, such as http://127.0.0.1:9000",
        )
    if "@" in parts.netloc:
        raise _invalid(url, "has credentials in endpoint_url", fix=CREDENTIALS_FIX)


def _invalid(url: str, problem: str, *, fix: str = ACCEPTED_FORMS) -> SettingError:
    return SettingError(f"{redact_url(url)!r} {problem}", setting=SETTING, fix=fix)


_USERINFO = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")
_QUERY_VALUE = re.compile(r"([?&]([^=&#]*)=)([^&#]*)")


def redact_url(url: str) -> str:
    """Return ``url`` for messages, with ``***`` in place of any password and of the values
    of unknown parameters, which could be secrets.
    """

    def mask_value(match: re.Match[str]) -> str:
        name = unquote(match.group(2))
        if name == "region":
            return match.group(0)
        if name == "endpoint_url":
            # The first pass cannot see a password that is percent-encoded in the value.
            decoded = unquote(match.group(3))
            masked = _USERINFO.sub(r"\1***@", decoded)
            return match.group(1) + masked if masked != decoded else match.group(0)
        return match.group(1) + "***"

    without_password = _USERINFO.sub(r"\1***@", url)
    return _QUERY_VALUE.sub(mask_value, without_password)
