"""The service commands as a user runs them: deploy, instances, executions and `splice serve`.

Every command is a subprocess of the installed `splice` executable, with SPLICE_DATA_DIR in
the test's folder and no SPLICE_MASTER_KEY, so the master key file in the data folder is
created and used. Every server the tests start listens on 127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server
from tests.conftest import EXAMPLE_DIR

SPLICE = Path(sys.executable).parent / "splice"
COMMAND_TIMEOUT = 120.0  # seconds for one splice command
START_TIMEOUT = 60.0  # seconds until /readyz of `splice serve` returns 200
DRAIN_TIMEOUT = 20  # SPLICE_DRAIN_TIMEOUT of the served processes, seconds
TERMINAL = ("succeeded", "failed", "cancelled")

DEFINITION = """\
key: greeter
name: Greeter
version: "1.2"
config:
  greeting: {type: string, required: true}
  cron: {type: string, default: "0 6 * * 1-5"}
flows:
  main:
    trigger: {type: manual}
    steps:
      - id: echo
        action: code.run
        inputs:
          source: |
            def run(context, body, greeting):
                return {"body": body, "greeting": greeting}
          args: {body: "{{ trigger.body }}", greeting: "{{ config.greeting }}"}
  nap:
    trigger: {type: manual}
    steps:
      - id: nap
        action: code.run
        inputs:
          source: |
            import time
            def run(context):
                print("napping", flush=True)
                time.sleep(3)
                return "rested"
  hook:
    trigger: {type: webhook}
    steps:
      - {id: note, action: log.write, inputs: {message: "hook"}}
  morning:
    trigger: {type: schedule, cron: "{{ config.cron }}", timezone: Europe/Berlin}
    steps:
      - {id: note, action: log.write, inputs: {message: "morning"}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Splice:
    """Runs `splice` commands against one data folder and one port."""

    data_dir: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("SPLICE_")
        }
        environment.update(
            {
                "SPLICE_DATA_DIR": str(self.data_dir),
                "SPLICE_PORT": str(self.port),
                "SPLICE_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
                "COLUMNS": "200",
            }
        )
        return environment

    def __call__(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SPLICE), *arguments],
            capture_output=True,
            text=True,
            env=self.environment(),
            cwd=self.folder,
            timeout=COMMAND_TIMEOUT,
        )

    def ok(self, *arguments: str) -> str:
        """Run a command that must succeed; return its standard output."""
        completed = self(*arguments)
        assert completed.returncode == 0, (arguments, completed.stdout, completed.stderr)
        return completed.stdout

    def show(self, execution_id: str) -> dict[str, Any]:
        return dict(json.loads(self.ok("executions", "show", execution_id, "--json")))

    def wait_until_ended(self, execution_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            data = self.show(execution_id)
            if data["status"] in TERMINAL:
                return data
            time.sleep(0.2)
        raise AssertionError(f"execution {execution_id} did not end within {timeout} s: {data}")


@pytest.fixture
def splice(tmp_path: Path) -> Splice:
    folder = tmp_path / "work"
    folder.mkdir()
    return Splice(tmp_path / "data", folder, _free_port())


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve(splice: Splice, tmp_path: Path) -> Iterator[Callable[[], Served]]:
    """Start `splice serve` on the test's port and wait until /readyz returns 200."""
    started: list[Served] = []

    def start() -> Served:
        log = tmp_path / f"serve-{len(started)}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [str(SPLICE), "serve", "--port", str(splice.port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=splice.environment(),
                cwd=splice.folder,
            )
        served = Served(process, log)
        started.append(served)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"splice serve exited early:\n{served.output()}")
            try:
                if httpx.get(f"{splice.url}/readyz", timeout=2).status_code == 200:
                    return served
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"splice serve did not get ready:\n{served.output()}")

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(timeout=30)


@pytest.fixture
def accounting(server: Server) -> Server:
    """The example accounting API on a free port of 127.0.0.1 (the shared fixture)."""
    return server


@pytest.fixture
def greeter(splice: Splice) -> Path:
    path = splice.folder / "greeter.yaml"
    path.write_text(DEFINITION)
    return path


def _deploy_json(splice: Splice, definition: Path, customer: str, *config: str) -> dict[str, Any]:
    arguments = ["deploy", str(definition), "--customer", customer, "--json"]
    for assignment in config:
        arguments += ["--config", assignment]
    return dict(json.loads(splice.ok(*arguments)))


def _terminate(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    return served.process.wait(timeout=DRAIN_TIMEOUT + 30)


# -- deploy -------------------------------------------------------------------------------


def test_deploy_prints_instance_and_urls(splice, greeter):
    output = splice.ok("deploy", str(greeter), "--customer", "acme", "--config", "greeting=hi")
    lines = output.splitlines()
    assert lines[0].startswith("created instance ")
    assert lines[0].endswith(" of greeter for acme")
    webhook = [line.split() for line in lines if line.strip().startswith("webhook")]
    assert len(webhook) == 1
    assert webhook[0][1] == "hook:"
    assert webhook[0][2].startswith(f"{splice.url}/webhooks/")
    assert "  schedule morning: 0 6 * * 1-5 (Europe/Berlin)" in lines

    key_file = splice.data_dir / "master.key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_deploy_json_and_redeploy_keeps_url(splice, greeter):
    first = _deploy_json(splice, greeter, "acme", "greeting=hi", "cron=30 7 * * *")
    assert first["created"] is True
    assert first["customer"] == "acme"
    assert first["integration"] == "greeter"
    assert set(first["webhooks"]) == {"hook"}
    assert first["schedules"] == {"morning": {"cron": "30 7 * * *", "timezone": "Europe/Berlin"}}

    again = _deploy_json(splice, greeter, "acme", "greeting=hello")
    assert again["created"] is False
    assert again["instance_id"] == first["instance_id"]
    assert again["webhooks"] == first["webhooks"]
    assert again["schedules"]["morning"]["cron"] == "0 6 * * 1-5"

    updated = splice.ok("deploy", str(greeter), "--customer", "acme", "--config", "greeting=x")
    assert updated.startswith(f"updated instance {first['instance_id']} ")
    assert first["webhooks"]["hook"] in updated

    other = _deploy_json(splice, greeter, "globex", "greeting=hi")
    assert other["instance_id"] != first["instance_id"]
    assert other["webhooks"]["hook"] != first["webhooks"]["hook"]


def test_deploy_missing_config_exits_3(splice, greeter):
    completed = splice("deploy", str(greeter), "--customer", "acme")
    assert completed.returncode == 3, completed.stderr
    assert "greeting" in completed.stderr
    assert completed.stdout == ""
    assert splice.ok("instances", "list") == ""


def test_deploy_invalid_cron_value_exits_3(splice, greeter):
    completed = splice(
        "deploy", str(greeter), "--customer", "acme", "--config", "greeting=hi",
        "--config", "cron=every morning",
    )  # fmt: skip
    assert completed.returncode == 3, completed.stderr
    assert "flows.morning.trigger.cron" in completed.stderr


# -- instances ----------------------------------------------------------------------------


def test_instances_list_show_disable_enable(splice, greeter):
    acme = _deploy_json(splice, greeter, "acme", "greeting=hi")
    globex = _deploy_json(splice, greeter, "globex", "greeting=hej")

    listed = splice.ok("instances", "list").splitlines()
    assert listed == [
        f"{acme['instance_id']}  acme/greeter  1.2  enabled",
        f"{globex['instance_id']}  globex/greeter  1.2  enabled",
    ]
    as_json = [json.loads(line) for line in splice.ok("instances", "list", "--json").splitlines()]
    assert [item["id"] for item in as_json] == [acme["instance_id"], globex["instance_id"]]
    only = splice.ok("instances", "list", "--customer", "globex").splitlines()
    assert len(only) == 1
    assert only[0].startswith(globex["instance_id"])
    assert splice.ok("instances", "list", "--integration", "other") == ""

    for reference in (acme["instance_id"], acme["instance_id"][:8], "acme/greeter"):
        shown = json.loads(splice.ok("instances", "show", reference))
        assert shown["id"] == acme["instance_id"]
        assert shown["webhooks"] == acme["webhooks"]
        assert shown["schedules"]["morning"]["cron"] == "0 6 * * 1-5"
        assert shown["flows"]["hook"]["trigger"] == "webhook"
        assert shown["enabled"] is True

    disabled = splice.ok("instances", "disable", "acme/greeter")
    assert disabled.strip() == f"disabled instance {acme['instance_id']}"
    assert json.loads(splice.ok("instances", "show", "acme/greeter"))["enabled"] is False
    assert splice.ok("instances", "list").splitlines()[0].endswith("  disabled")
    enabled = splice.ok("instances", "enable", acme["instance_id"][:8])
    assert enabled.strip() == f"enabled instance {acme['instance_id']}"
    assert json.loads(splice.ok("instances", "show", "acme/greeter"))["enabled"] is True


def test_instances_show_unknown_exits_2(splice, greeter):
    _deploy_json(splice, greeter, "acme", "greeting=hi")
    for command in ("show", "disable", "enable"):
        completed = splice("instances", command, "initech/greeter")
        assert completed.returncode == 2, (command, completed.stderr)
        assert "initech/greeter" in completed.stderr
        assert "splice instances list" in completed.stderr


# -- executions ---------------------------------------------------------------------------


def test_start_execution_then_serve_runs_it(splice, greeter, serve):
    _deploy_json(splice, greeter, "acme", "greeting=hi")
    value = {"order": 7, "note": "Grüße"}
    input_file = splice.folder / "input.json"
    input_file.write_text(json.dumps(value), encoding="utf-8")
    execution_id = splice.ok(
        "executions", "start", "acme/greeter", "main", "--input", str(input_file)
    ).strip()
    queued = splice.show(execution_id)
    assert queued["status"] == "queued"
    assert queued["flow"] == "main"
    assert queued["trigger_type"] == "manual"

    served = serve()
    data = splice.wait_until_ended(execution_id)
    assert data["status"] == "succeeded", data
    assert [run["path"] for run in data["step_runs_detail"]] == ["echo"]
    detail = httpx.get(f"{splice.url}/api/executions/{execution_id}").json()
    assert detail["result"] == {"body": value, "greeting": "hi"}
    assert _terminate(served) == 0, served.output()


def test_start_execution_errors(splice, greeter):
    _deploy_json(splice, greeter, "acme", "greeting=hi")
    unknown_flow = splice("executions", "start", "acme/greeter", "nope")
    assert unknown_flow.returncode == 2, unknown_flow.stderr
    assert "nope" in unknown_flow.stderr
    unknown_instance = splice("executions", "start", "initech/greeter", "main")
    assert unknown_instance.returncode == 2
    assert "initech/greeter" in unknown_instance.stderr
    missing_input = splice("executions", "start", "acme/greeter", "main", "--input", "no.json")
    assert missing_input.returncode == 2
    assert "no.json" in missing_input.stderr
    splice.ok("instances", "disable", "acme/greeter")
    disabled = splice("executions", "start", "acme/greeter", "main")
    assert disabled.returncode == 2
    assert "disabled" in disabled.stderr


def test_cancel_queued_execution(splice, greeter, serve):
    _deploy_json(splice, greeter, "acme", "greeting=hi")
    cancelled = splice.ok("executions", "start", "acme/greeter", "main").strip()
    kept = splice.ok("executions", "start", "acme/greeter", "main").strip()
    output = splice.ok("executions", "cancel", cancelled)
    assert output.strip() == f"cancelled {cancelled}"
    data = splice.show(cancelled)
    assert data["status"] == "cancelled"
    assert data["error_type"] == "Cancelled"

    again = splice("executions", "cancel", cancelled)
    assert again.returncode == 2
    assert "already ended" in again.stderr
    unknown = splice("executions", "cancel", "0123456789ab")
    assert unknown.returncode == 2
    assert "0123456789ab" in unknown.stderr

    served = serve()
    assert splice.wait_until_ended(kept)["status"] == "succeeded"
    after = splice.show(cancelled)
    assert after["status"] == "cancelled"
    assert after["step_runs_detail"] == []
    assert _terminate(served) == 0, served.output()


# -- serve --------------------------------------------------------------------------------


def _deploy_invoice_sync(splice: Splice, accounting: Server) -> dict[str, Any]:
    return _deploy_json(
        splice,
        EXAMPLE_DIR / "integration.yaml",
        "acme",
        f"inbox={EXAMPLE_DIR / 'invoices'}",
        f"accounting_url={accounting.url}",
        f"accounting.api_key={accounting.api_key}",
    )


def test_serve_answers_invoice_webhook(splice, serve, accounting):
    deployment = _deploy_invoice_sync(splice, accounting)
    url = deployment["webhooks"]["receive"]
    served = serve()
    invoice = (EXAMPLE_DIR / "invoices" / "base-example.xml").read_bytes()
    headers = {"content-type": "application/xml", "x-delivery-id": "delivery-1"}

    answer = httpx.post(url, content=invoice, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["invoice_id"]
    assert record["source_file"] == "webhook"
    stored = accounting.stored()
    assert len(stored) == 1
    assert stored[0]["invoice"] == record
    execution_id = answer.headers["x-splice-execution-id"]
    data = splice.show(execution_id)
    assert data["status"] == "succeeded"
    assert data["trigger_type"] == "webhook"
    assert [run["path"] for run in data["step_runs_detail"]] == ["parse", "map", "post", "answer"]

    repeated = httpx.post(url, content=invoice, headers=headers, timeout=60)
    assert repeated.status_code == 200, repeated.text
    assert repeated.json() == record
    assert repeated.headers["x-splice-execution-id"] == execution_id
    assert len(accounting.stored()) == 1

    assert _terminate(served) == 0, served.output()
    assert "listening on" in served.output()


def test_serve_rejects_bad_invoice_with_500(splice, serve, accounting):
    url = _deploy_invoice_sync(splice, accounting)["webhooks"]["receive"]
    served = serve()
    answer = httpx.post(
        url,
        content=b"<Order/>",
        headers={"content-type": "application/xml", "x-delivery-id": "delivery-2"},
        timeout=60,
    )
    assert answer.status_code == 500, answer.text
    data = answer.json()
    assert data["status"] == "failed"
    assert data["error"]["step"] == "map"
    assert splice.show(data["execution_id"])["status"] == "failed"
    assert accounting.stored() == []
    assert _terminate(served) == 0, served.output()


def test_sigterm_drains_running_execution(splice, greeter, serve):
    _deploy_json(splice, greeter, "acme", "greeting=hi")
    served = serve()
    execution_id = splice.ok("executions", "start", "acme/greeter", "nap").strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = httpx.get(f"{splice.url}/api/executions/{execution_id}/logs").json()
        if any(line["message"] == "napping" for line in logs):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"execution {execution_id} never started its nap")

    assert _terminate(served) == 0, served.output()
    assert "running executions finish first" in served.output()
    data = splice.show(execution_id)
    assert data["status"] == "succeeded", data


def test_serve_on_taken_port_exits_cleanly(splice):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", splice.port))
        taken.listen()
        completed = splice("serve", "--port", str(splice.port))
    assert completed.returncode != 0
    assert "address already in use" in completed.stderr
    assert "Traceback" not in completed.stderr
