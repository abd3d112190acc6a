"""Blob stores for the integration tests: a local folder, and buckets on moto's S3 server.

The moto server listens on 127.0.0.1 on a free port and stops when the test session ends.
Every test runs with AWS settings of its own: test credentials, no config files, and no
instance metadata lookups, so boto3 never reads the machine's AWS setup.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from splice.blobs import BlobStore, LocalBlobStore
from splice.blobs.s3 import S3BlobStore
from tests.integration.moto_server import run_moto_server

REGION = "us-east-1"
STORE_PREFIX = "splice/blobs"


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AWS settings of this test alone: moto's test credentials and nothing from the machine."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")


@pytest.fixture(scope="session")
def moto_auth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server that checks credentials, so it rejects the test credentials."""
    yield from run_moto_server(
        tmp_path_factory.mktemp("moto-auth"), {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    )


@pytest.fixture
def s3_admin(moto_url: str, aws_environment: None) -> Iterator[Any]:
    """A plain boto3 client that creates buckets and inspects what the stores wrote."""
    client = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    yield client
    client.close()


@pytest.fixture
def bucket(s3_admin: Any) -> str:
    """A new empty bucket."""
    name = f"splice-test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(moto_url: str, bucket: str) -> Iterator[S3BlobStore]:
    """An S3BlobStore on a new bucket, below the prefix STORE_PREFIX."""
    store = S3BlobStore(bucket, STORE_PREFIX, endpoint_url=moto_url, region=REGION)
    yield store
    store.close()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    """A LocalBlobStore in a folder of the test."""
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest) -> BlobStore:
    """A test using this fixture runs once on the local store and once on S3 (moto)."""
    store: BlobStore = request.getfixturevalue(f"{request.param}_store")
    return store
