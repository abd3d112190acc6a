"""The record store on SQLite and PostgreSQL: migrations, writes in batches, reads."""

from __future__ import annotations

import datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from splice.store import RecordStore
from splice.store.records import HEAD_REVISION, now
from splice.store.tables import metadata


def _execution(execution_id: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": execution_id,
        "integration_key": "invoice-sync",
        "integration_version": "1.0.0",
        "flow": "sync",
        "trigger_type": "manual",
        "status": "running",
        "created_at": now(),
        "started_at": now(),
    }
    row.update(values)
    return row


def _step_run(execution_id: str, sequence: int) -> dict[str, object]:
    moment = now()
    return {
        "execution_id": execution_id,
        "sequence": sequence,
        "path": f"invoices[{sequence}].post",
        "step_id": "post",
        "kind": "action",
        "action": "http.request",
        "status": "succeeded",
        "attempt": 1,
        "started_at": moment,
        "ended_at": moment + datetime.timedelta(milliseconds=2),
        "input_size": 120,
        "output_size": 3,
        "output": b"\x93\x01\x02\x03",
        "output_encoding": "msgpack",
        "continued": False,
    }


def test_migrated_schema_matches_tables(database_url: str) -> None:
    """Alembic's migrations create exactly the tables that splice.store.tables defines."""
    store = RecordStore.open(database_url)
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    store.close()
    assert differences == []


def test_migrate_twice_keeps_head(database_url: str) -> None:
    """Opening a migrated database again leaves it at the head revision."""
    RecordStore.open(database_url).close()
    store = RecordStore.open(database_url)
    revision = store._revision()
    store.close()
    assert revision == HEAD_REVISION


def test_batch_and_final_state_roundtrip(database_url: str) -> None:
    """Step runs, logs and the final execution update written in one batch read back."""
    store = RecordStore.open(database_url)
    store.create_execution(_execution("exec-1"))
    logs = [
        {
            "execution_id": "exec-1",
            "sequence": 1,
            "step_path": "invoices[0].map",
            "level": "info",
            "time": now(),
            "message": "mapped base-example.xml",
        }
    ]
    steps = [_step_run("exec-1", n) for n in range(1, 501)]
    store.write_batch(steps, logs, ("exec-1", {"status": "succeeded", "step_runs": 500}))
    record = store.get_execution("exec-1")
    runs = store.step_runs("exec-1")
    lines = store.logs("exec-1")
    store.close()
    assert record is not None
    assert record.status == "succeeded"
    assert record.step_runs == 500
    assert len(runs) == 500
    assert runs[0].output == b"\x93\x01\x02\x03"
    assert [run.sequence for run in runs] == list(range(1, 501))
    assert lines[0]["message"] == "mapped base-example.xml"


def test_get_execution_by_prefix(database_url: str) -> None:
    """A unique prefix of six or more characters finds an execution; an ambiguous one none."""
    store = RecordStore.open(database_url)
    store.create_execution(_execution("0193aa00-0000-7000-8000-000000000001"))
    store.create_execution(_execution("0193aa00-0000-7000-8000-000000000002"))
    unique = store.get_execution("0193aa00-0000-7000-8000-00000000000")
    found = store.get_execution("0193aa00-0000-7000-8000-000000000002")
    store.close()
    assert unique is None
    assert found is not None
    assert found.id.endswith("2")


def test_list_executions_filters(database_url: str) -> None:
    """Listing filters by status and returns the newest first."""
    store = RecordStore.open(database_url)
    base = now()
    for number, status in enumerate(["succeeded", "failed", "succeeded"]):
        store.create_execution(
            _execution(
                f"exec-{number}",
                status=status,
                created_at=base + datetime.timedelta(seconds=number),
            )
        )
    succeeded = store.list_executions(status="succeeded")
    store.close()
    assert [record.id for record in succeeded] == ["exec-2", "exec-0"]
