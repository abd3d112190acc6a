"""The engine's handling of customer code: tracebacks, logs, secrets, large values, crashes."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from splice.blobs.local import LocalBlobStore
from splice.engine.values import decode

HEADER = """\
key: test
name: Test
config:
  token: {type: secret}
  accounting: {type: connection, connection: api_key}
flows:
  main:
    trigger: {type: manual}
"""

TOKEN = "tok-Zq8v1LmX4p"
API_KEY = "key-R7w2Nc9Kd3"
SECRETS = [f"token={TOKEN}", f"accounting.api_key={API_KEY}"]

CUSTOMER_CODE = """\
import logging
import os
import time


def compute(context, *, value):
    return helper(value)


def helper(value):
    return 10 / value


def chatty(context):
    context.logger.info("starting with %d items", 3)
    print("printed line")
    logging.getLogger("customer").warning("through the logging module")
    return "done"


def leak(context):
    token = context.config["token"]
    key = context.config["accounting"]["api_key"]
    context.logger.info("token is %s", token)
    print("key is", key)
    return {"token": token, "nested": [key, f"Bearer {token}"], key: "as a key"}


def leak_large(context):
    # Larger than the spill threshold, so the value is stored as a blob.
    token = context.config["token"]
    return {"text": "x" * 300_000 + token, "data": b"y" * 300_000 + token.encode()}


def leak_error(context):
    raise RuntimeError("bad token " + context.config["token"])


def sleep(context, *, seconds):
    time.sleep(seconds)
    return seconds


def crash(context):
    os._exit(3)
"""


def code(step_id: str, function: str, args: str = "{}") -> str:
    return (
        f"      - id: {step_id}\n        action: code.run\n"
        f"        inputs: {{file: customer.py, function: {function}, args: {args}}}\n"
    )


def run_steps(local, write_integration, steps: str, **options):
    path = write_integration(HEADER + "    steps:\n" + steps, {"customer.py": CUSTOMER_CODE})
    return local.run(path, assignments=SECRETS, environ={}, **options)


def test_customer_traceback(local, write_integration):
    """A customer exception keeps only the customer file's frames, with their line numbers."""
    outcome = run_steps(local, write_integration, code("divide", "compute", "{value: 0}"))
    run = local.store.step_runs(outcome.execution_id)[0]
    assert (run.error_type, run.error_message) == ("ZeroDivisionError", "division by zero")
    # Python 3.11 and later add lines of ^ and ~ under the failing expression.
    lines = [
        line
        for line in (run.error_traceback or "").splitlines(keepends=True)
        if line.strip(" ^~\n")
    ]
    assert "".join(lines) == (
        "Traceback (most recent call last):\n"
        '  File "customer.py", line 7, in compute\n'
        "    return helper(value)\n"
        '  File "customer.py", line 11, in helper\n'
        "    return 10 / value\n"
        "ZeroDivisionError: division by zero\n"
    )


def test_customer_logs(local, write_integration):
    """Logger lines and print() lines are stored with the step's path."""
    outcome = run_steps(local, write_integration, code("talk", "chatty"))
    lines = [
        (line["step_path"], line["level"], line["message"])
        for line in local.store.logs(outcome.execution_id)
    ]
    assert ("talk", "info", "starting with 3 items") in lines
    assert ("talk", "info", "printed line") in lines


def test_customer_logging_module(local, write_integration):
    """A warning through the logging module reaches the execution's log."""
    outcome = run_steps(local, write_integration, code("talk", "chatty"))
    messages = [line["message"] for line in local.store.logs(outcome.execution_id)]
    assert any("through the logging module" in message for message in messages)


def stored_bytes(data_dir: Path) -> bytes:
    """Every byte Splice stored: the database with its WAL, blobs and scratch files."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.rglob("*")) if path.is_file())


def test_secrets_masked_in_records(local, write_integration, data_dir):
    """Secrets in outputs, logs, errors and the result never reach the stored bytes."""
    steps = (
        code("leak", "leak")
        + "        on_error: continue\n"
        + code("fail", "leak_error")
        + "        on_error: continue\n"
        + code("large", "leak_large")
        + code("again", "leak")
    )
    outcome = run_steps(local, write_integration, steps)
    local.store.close()
    stored = stored_bytes(data_dir)
    assert any((data_dir / "blobs").rglob("value-*"))
    assert TOKEN.encode() not in stored
    assert API_KEY.encode() not in stored
    assert outcome.result == {
        "token": "[secret]",
        "nested": ["[secret]", "Bearer [secret]"],
        "[secret]": "as a key",
    }


def test_secrets_masked_in_error(local, write_integration):
    """A customer error quoting a secret is recorded masked, traceback included."""
    outcome = run_steps(local, write_integration, code("fail", "leak_error"))
    run = local.store.step_runs(outcome.execution_id)[0]
    assert outcome.error_message == "bad token [secret]"
    assert TOKEN not in (run.error_traceback or "")
    assert "RuntimeError: bad token [secret]" in (run.error_traceback or "")


def test_secrets_masked_in_logs(local, write_integration):
    """Logged and printed secrets are masked."""
    outcome = run_steps(local, write_integration, code("leak", "leak"))
    messages = [line["message"] for line in local.store.logs(outcome.execution_id)]
    assert messages == ["token is [secret]", "key is [secret]"]


def test_secret_in_result_expression_error(local, write_integration, data_dir):
    """A flow result expression whose error quotes a secret is masked in the execution."""
    path = write_integration(
        HEADER
        + '    result: "{{ steps.first[config.token] }}"\n    steps:\n'
        + code("first", "compute", "{value: 2}"),
        {"customer.py": CUSTOMER_CODE},
    )
    outcome = local.run(path, assignments=SECRETS, environ={})
    local.store.close()
    assert outcome.status == "failed"
    assert TOKEN not in (outcome.error_message or "")
    assert TOKEN.encode() not in stored_bytes(data_dir)


PAYLOAD_SIZE = 100 * 1024 * 1024
PAYLOAD_CODE = f"""\
import hashlib
import random


def produce(context):
    return random.Random(7).randbytes({PAYLOAD_SIZE})


def digest(context, *, data):
    return {{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
"""


def test_large_payload(local, write_integration, settings):
    """100 MB of bytes pass from one step to the next unchanged, and into the blob store."""
    path = write_integration(
        HEADER + "    steps:\n"
        "      - id: produce\n        action: code.run\n"
        "        inputs: {file: payload.py, function: produce}\n"
        "      - id: digest\n        action: code.run\n"
        "        inputs: {file: payload.py, function: digest, "
        "args: {data: '{{ steps.produce }}'}}\n",
        {"payload.py": PAYLOAD_CODE},
    )
    expected = hashlib.sha256(random.Random(7).randbytes(PAYLOAD_SIZE)).hexdigest()
    outcome = local.run(path, environ={})
    assert outcome.result == {"sha256": expected, "size": PAYLOAD_SIZE}
    produce = local.store.step_runs(outcome.execution_id)[0]
    assert (produce.output_size, produce.output_encoding) == (PAYLOAD_SIZE, "bytes")
    assert produce.output_blob is not None
    blob = LocalBlobStore(settings.blob_dir).path(produce.output_blob)
    assert blob is not None
    with blob.open("rb") as file:
        assert hashlib.file_digest(file, "sha256").hexdigest() == expected


def test_execution_timeout(open_local, write_integration):
    """An execution past SPLICE_EXECUTION_TIMEOUT is stopped and recorded as failed."""
    local = open_local(SPLICE_EXECUTION_TIMEOUT="1")
    outcome = run_steps(local, write_integration, code("wait", "sleep", "{seconds: 30}"))
    assert outcome.status == "failed"
    assert outcome.error_type == "ExecutionTimeout"
    assert outcome.duration < 10
    record = local.store.get_execution(outcome.execution_id)
    assert record is not None
    assert (record.status, record.error_type) == ("failed", "ExecutionTimeout")


def test_child_exit(local, write_integration):
    """A child that calls os._exit(3) ends the execution as failed, naming the exit code."""
    outcome = run_steps(local, write_integration, code("crash", "crash"))
    assert outcome.status == "failed"
    assert outcome.error_type == "SandboxError"
    assert outcome.error_message == "the sandboxed child exited with code 3 before it finished"


def test_after_child_exit(local, write_integration):
    """The execution after a crashed one still succeeds."""
    run_steps(local, write_integration, code("crash", "crash"))
    outcome = run_steps(local, write_integration, code("divide", "compute", "{value: 4}"))
    assert (outcome.status, outcome.result) == ("succeeded", 2.5)


def test_outputs_decode(local, write_integration):
    """A recorded output decodes to the value the step returned."""
    outcome = run_steps(local, write_integration, code("divide", "compute", "{value: 4}"))
    run = local.store.step_runs(outcome.execution_id)[0]
    assert decode(run.output or b"", run.output_encoding or "msgpack") == 2.5
