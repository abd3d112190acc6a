"""Blob stores for the integration tests: a local folder, and buckets on moto's S3 server.

The moto server listens on 127.0.0.1 on a free port and stops when the test session ends.
Every test runs with AWS settings of its own: test credentials, no config files, and no
instance metadata lookups, so boto3 never reads the machine's AWS setup.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from splice.blobs import BlobStore, LocalBlobStore
from splice.blobs.s3 import S3BlobStore

MOTO_START_SECONDS = 30
REGION = "us-east-1"
STORE_PREFIX = "splice/blobs"


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server started for this session, which accepts any credentials."""
    yield from run_moto_server(tmp_path_factory.mktemp("moto"), {})


@pytest.fixture(scope="session")
def moto_auth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server that checks credentials, so it rejects the test credentials."""
    yield from run_moto_server(
        tmp_path_factory.mktemp("moto-auth"), {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    )


def run_moto_server(folder: Path, environment: dict[str, str]) -> Iterator[str]:
    """Start moto's server on a free port, yield its URL, then stop it by its PID."""
    if importlib.util.find_spec("moto") is None:
        reason = "moto is not installed; install the dev extra to run the S3 tests"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **environment},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it responds; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + MOTO_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto server exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"moto server did not answer on {url} within {MOTO_START_SECONDS} s")


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
