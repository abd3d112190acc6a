"""Databases for integration tests: a SQLite file, and a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.integration.moto_server import run_moto_server

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _server_url() -> str:
    url = os.environ.get("SPLICE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database created for this test on the PostgreSQL server, dropped afterwards."""
    server = _server_url()
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"splice_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {make_url(server)!r} is unreachable in CI: {error}")
        pytest.skip(f"PostgreSQL unreachable at {make_url(server)!r}; set SPLICE_TEST_POSTGRES_URL")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A test using this fixture runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server started for this session, which accepts any credentials."""
    yield from run_moto_server(tmp_path_factory.mktemp("moto"), {})
