"""SPLICE_BLOB_URL values: the locations they name, the stores they open, and their errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from splice.blobs import LocalBlobStore, LocalLocation, S3Location, open_blob_store, parse_blob_url
from splice.blobs.url import redact_url
from splice.errors import ConfigError, SettingError


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AWS settings of this test alone, so that boto3 reads nothing from the machine."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, LocalLocation()),
        ("", LocalLocation()),
        ("   ", LocalLocation()),
        ("file:///var/lib/splice/blobs", LocalLocation(Path("/var/lib/splice/blobs"))),
        ("file://localhost/srv/blobs/", LocalLocation(Path("/srv/blobs/"))),
        ("file:/srv/blobs", LocalLocation(Path("/srv/blobs"))),
        ("file:///srv/my%20blobs", LocalLocation(Path("/srv/my blobs"))),
        ("s3://splice-blobs", S3Location("splice-blobs")),
        ("s3://splice-blobs/", S3Location("splice-blobs")),
        ("s3://splice-blobs/prod/eu/", S3Location("splice-blobs", "prod/eu")),
        (
            "s3://splice-blobs/prod?endpoint_url=http://127.0.0.1:9000&region=us-east-1",
            S3Location("splice-blobs", "prod", "http://127.0.0.1:9000", "us-east-1"),
        ),
        (
            "s3://splice-blobs?region=eu-west-1",
            S3Location("splice-blobs", "", None, "eu-west-1"),
        ),
        (
            "s3://splice-blobs?endpoint_url=http%3A%2F%2F127.0.0.1%3A9000",
            S3Location("splice-blobs", "", "http://127.0.0.1:9000", None),
        ),
        (" s3://legacy_Bucket.name ", S3Location("legacy_Bucket.name")),
    ],
)
def test_parse_valid(url: str | None, expected: LocalLocation | S3Location) -> None:
    """Each accepted form parses to the location it names."""
    assert expected == parse_blob_url(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("/var/lib/splice/blobs", "has a missing scheme"),
        ("http://127.0.0.1:9000/bucket", "has the scheme 'http:'"),
        ("gs://bucket", "has the scheme 'gs:'"),
        ("file://server/share", "names the host 'server'"),
        ("file:relative/folder", "needs an absolute folder path"),
        ("file:///", "needs an absolute folder path other than '/'"),
        ("file:///srv/blobs?mode=x", "has a query or a fragment"),
        ("s3://", "has no bucket name"),
        ("s3:///prefix", "has no bucket name"),
        ("s3://bucket:9000", "names a port"),
        ("s3://bad*bucket", "not a valid bucket name"),
        ("s3://bucket/a/../b", "has an invalid path"),
        ("s3://bucket/a//b", "has an invalid path"),
        ("s3://bucket#part", "has a fragment"),
        ("s3://bucket?endpoint=http://127.0.0.1:9000", "unknown parameter 'endpoint'"),
        ("s3://bucket?region=a&region=b", "gives the parameter 'region' more than once"),
        ("s3://bucket?region=", "gives the parameter 'region' an empty value"),
        ("s3://bucket?endpoint_url=127.0.0.1:9000", "endpoint_url that is not an http://"),
        ("s3://bucket?endpoint_url=ftp://127.0.0.1", "endpoint_url that is not an http://"),
        ("s3://bucket?endpoint_url=http://127.0.0.1:port", "has an invalid endpoint_url"),
        ("s3://[bucket", "is not a valid URL"),
    ],
)
def test_parse_invalid(url: str, problem: str) -> None:
    """An invalid value raises SettingError naming the setting, the value and the problem."""
    with pytest.raises(SettingError) as raised:
        parse_blob_url(url)
    message = str(raised.value)
    assert "SPLICE_BLOB_URL" == raised.value.setting
    assert message.startswith("setting SPLICE_BLOB_URL (from the environment): ")
    assert problem in message
    assert isinstance(raised.value, ConfigError)


def test_invalid_names_accepted_forms() -> None:
    """The fix of an unsupported scheme lists every accepted form."""
    with pytest.raises(SettingError) as raised:
        parse_blob_url("gs://bucket")
    assert "file:///ABSOLUTE/FOLDER" in raised.value.fix
    assert "s3://BUCKET[/PREFIX][?endpoint_url=http://HOST:PORT&region=REGION]" in (
        raised.value.fix
    )
    assert "unset" in raised.value.fix


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://AKIDEXAMPLE:hunter2secret@bucket", "contains credentials"),
        (
            "s3://bucket?endpoint_url=http://minio:hunter2secret@127.0.0.1:9000",
            "has credentials in endpoint_url",
        ),
        (
            "s3://bucket?endpoint_url=http%3A%2F%2Fminio%3Ahunter2secret%40127.0.0.1",
            "has credentials in endpoint_url",
        ),
        ("s3://bucket?aws_secret_access_key=hunter2secret", "unknown parameter"),
        ("gs://user:hunter2secret@bucket", "has the scheme 'gs:'"),
    ],
)
def test_error_hides_password(url: str, problem: str) -> None:
    """A password or secret in the value never appears in the error."""
    with pytest.raises(SettingError) as raised:
        parse_blob_url(url)
    assert problem in str(raised.value)
    assert "hunter2secret" not in str(raised.value)
    assert "***" in str(raised.value)


def test_credentials_error_fix() -> None:
    """Credentials in the URL are rejected with where boto3 takes them from instead."""
    with pytest.raises(SettingError) as raised:
        parse_blob_url("s3://key:secret@bucket")
    assert "AWS_ACCESS_KEY_ID" in raised.value.fix
    assert "AWS_PROFILE" in raised.value.fix


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://bucket/p?endpoint_url=http://127.0.0.1:9000", None),
        ("s3://user:pw@bucket", "s3://user:***@bucket"),
        ("s3://bucket?region=eu&token=abc&x", "s3://bucket?region=eu&token=***&x"),
        ("s3://bucket?endpoint_url=http://u:pw@host", "s3://bucket?endpoint_url=http://u:***@host"),
    ],
)
def test_redact_url(url: str, shown: str | None) -> None:
    """redact_url masks passwords and unknown parameter values, and keeps the rest."""
    assert (shown or url) == redact_url(url)


def test_open_default_folder(tmp_path: Path) -> None:
    """No URL opens the local store in local_root, creating the folder."""
    store = open_blob_store(None, local_root=tmp_path / "blobs")
    assert isinstance(store, LocalBlobStore)
    assert tmp_path / "blobs" == store.root
    assert store.root.is_dir()


def test_open_file_url(tmp_path: Path) -> None:
    """A file URL opens the local store in that folder, not in local_root."""
    store = open_blob_store(f"file://{tmp_path}/other", local_root=tmp_path / "blobs")
    assert isinstance(store, LocalBlobStore)
    assert tmp_path / "other" == store.root


@pytest.fixture
def s3_store(aws_environment: None) -> Iterator[object]:
    store = open_blob_store(
        "s3://splice-blobs/prod/eu?endpoint_url=http://127.0.0.1:9&region=eu-west-1",
        local_root=Path("/nonexistent-unused"),
    )
    yield store
    store.close()


def test_open_s3_url(s3_store: object) -> None:
    """An s3 URL opens an S3BlobStore with its bucket, prefix, endpoint and region."""
    from splice.blobs.s3 import S3BlobStore

    assert isinstance(s3_store, S3BlobStore)
    assert "splice-blobs" == s3_store.bucket
    assert "prod/eu" == s3_store.prefix
    assert "http://127.0.0.1:9" == s3_store.endpoint_url
    assert "eu-west-1" == s3_store._client.meta.region_name
    assert "prod/eu/executions/e1/a" == s3_store.object_key("executions/e1/a")


def test_open_invalid_url(tmp_path: Path) -> None:
    """open_blob_store raises the same SettingError as parse_blob_url."""
    with pytest.raises(SettingError, match="SPLICE_BLOB_URL"):
        open_blob_store("ftp://bucket", local_root=tmp_path)


def test_local_store_skips_boto3(tmp_path: Path) -> None:
    """Opening the local store, by default or from a file URL, never imports boto3."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from splice.blobs import open_blob_store
        open_blob_store(None, local_root=Path({str(tmp_path / "a")!r}))
        open_blob_store("file://{tmp_path}/b", local_root=Path("/unused"))
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("boto3", "botocore")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "[]" == result.stdout.strip()
