"""The HTTP API of a running service: instances, executions, cancel, health, OpenAPI."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from splice.service.scheduler import Scheduler

DEFINITION = """
    key: shop
    name: Shop
    version: "2.1"
    config:
      greeting: {type: string, default: hello}
    flows:
      echo:
        trigger: {type: manual}
        steps:
          - id: note
            action: log.write
            inputs: {message: "echo started"}
          - id: echo
            action: code.run
            inputs:
              source: |
                def run(context, body, greeting):
                    print("printed by echo")
                    return {"body": body, "greeting": greeting}
              args: {body: "{{ trigger.body }}", greeting: "{{ config.greeting }}"}
      hook:
        trigger: {type: webhook}
        steps:
          - {id: note, action: log.write, inputs: {message: "hook"}}
      nightly:
        trigger: {type: schedule, cron: "* * * * *", timezone: Europe/Berlin}
        steps:
          - id: tick
            action: code.run
            inputs:
              source: |
                def run(context, trigger):
                    return trigger
              args: {trigger: "{{ trigger }}"}
      slow:
        trigger: {type: manual}
        concurrency: 2
        steps:
          - id: first
            action: log.write
            inputs: {message: "before the nap"}
          - id: nap
            action: code.run
            inputs:
              source: |
                import time
                def run(context):
                    print("napping", flush=True)
                    time.sleep(120)
                    return "woke up"
      broken:
        trigger: {type: manual}
        steps:
          - id: boom
            action: code.run
            inputs:
              source: |
                def run(context):
                    raise ValueError("no such order")
"""

TERMINAL = ("succeeded", "failed", "cancelled")


class Clock:
    """A clock that tests move by hand; it starts at the real time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _deploy(service, definition, customer: str = "acme", **config: Any):
    return service.deploy(definition(DEFINITION), customer=customer, **config)


def _start(service, reference: str, flow: str, value: Any = None) -> str:
    answer = service.client.post(
        f"/api/instances/{reference}/flows/{flow}/executions", json={"input": value}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["execution_id"])


def _poll(service, execution_id: str, condition, timeout: float = 30.0) -> dict[str, Any]:
    """Poll GET /api/executions/{id} until ``condition(data)`` holds; return the data."""
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = service.client.get(f"/api/executions/{execution_id}").json()
        if condition(data):
            return data
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} never reached the condition: {data}")


def _wait_for_log(service, execution_id: str, message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = service.client.get(f"/api/executions/{execution_id}/logs").json()
        if any(line["message"] == message for line in lines):
            return
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} never logged {message!r}")


def _ended(service, execution_id: str) -> dict[str, Any]:
    return _poll(service, execution_id, lambda data: data["status"] in TERMINAL)


# -- instances ----------------------------------------------------------------------------


def test_list_instances_with_filters(start_service, definition):
    service = start_service(worker=False)
    acme = _deploy(service, definition, "acme")
    globex = _deploy(service, definition, "globex")
    other = definition(DEFINITION.replace("key: shop", "key: crm"), name="crm.yaml")
    crm = service.deploy(other, customer="acme")

    everything = service.client.get("/api/instances")
    assert everything.status_code == 200
    assert [item["id"] for item in everything.json()] == [
        crm.instance.id,
        acme.instance.id,
        globex.instance.id,
    ]
    first = everything.json()[1]
    assert first["customer"] == "acme"
    assert first["integration"] == "shop"
    assert first["integration_name"] == "Shop"
    assert first["version"] == "2.1"
    assert first["enabled"] is True
    assert first["created_at"].endswith("Z")

    by_customer = service.client.get("/api/instances", params={"customer": "acme"}).json()
    assert {item["id"] for item in by_customer} == {acme.instance.id, crm.instance.id}
    by_integration = service.client.get("/api/instances", params={"integration": "shop"}).json()
    assert {item["id"] for item in by_integration} == {acme.instance.id, globex.instance.id}
    both = service.client.get(
        "/api/instances", params={"customer": "globex", "integration": "shop"}
    ).json()
    assert [item["id"] for item in both] == [globex.instance.id]
    nobody = service.client.get("/api/instances", params={"customer": "initech"})
    assert nobody.status_code == 200
    assert nobody.json() == []


def test_show_instance_by_id_prefix_and_name(start_service, definition):
    service = start_service(worker=False)
    deployment = _deploy(service, definition)
    instance_id = deployment.instance.id
    for reference in (instance_id, instance_id[:8], "acme/shop"):
        answer = service.client.get(f"/api/instances/{reference}")
        assert answer.status_code == 200, (reference, answer.text)
        data = answer.json()
        assert data["id"] == instance_id
        assert data["webhooks"] == {"hook": deployment.webhooks["hook"]}
        assert data["webhooks"]["hook"].startswith(service.runtime.settings.service.base_url())
        assert data["schedules"]["nightly"]["cron"] == "* * * * *"
        assert data["schedules"]["nightly"]["timezone"] == "Europe/Berlin"
        assert data["schedules"]["nightly"]["catch_up"] == "skip"
        assert data["flows"]["slow"] == {"trigger": "manual", "concurrency": 2}
        assert data["flows"]["hook"] == {"trigger": "webhook", "concurrency": None}
        assert set(data["flows"]) == {"echo", "hook", "nightly", "slow", "broken"}
    webhooks = service.client.get("/api/instances/acme/shop/webhooks")
    assert webhooks.status_code == 200
    assert webhooks.json() == deployment.webhooks


def test_show_unknown_instance_answers_404(start_service, definition):
    service = start_service(worker=False)
    _deploy(service, definition)
    for reference in ("no-such-id-at-all", "acme/crm", "initech/shop"):
        answer = service.client.get(f"/api/instances/{reference}")
        assert answer.status_code == 404, reference
        assert reference in answer.json()["error"]
        assert "splice instances list" in answer.json()["error"]


def test_disabled_instance_stops_webhooks_and_schedules(start_service, definition):
    clock = Clock()
    service = start_service(worker=False, clock=clock)
    deployment = _deploy(service, definition)
    url = deployment.webhooks["hook"]
    runtime = service.runtime
    scheduler = Scheduler(runtime.store, runtime.intake, runtime.instances, clock=clock)

    disabled = service.client.post("/api/instances/acme/shop/disable")
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert service.client.get("/api/instances/acme/shop").json()["enabled"] is False
    rejected = service.client.post(url, json={"order": 1})
    assert rejected.status_code == 409
    assert "splice instances enable" in rejected.json()["error"]
    clock.offset += 120  # at least one due time of the every-minute schedule has passed
    assert scheduler.tick() == []
    assert service.client.get("/api/executions").json() == []

    enabled = service.client.post(f"/api/instances/{deployment.instance.id}/enable")
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True
    assert service.client.post(url, json={"order": 2}).status_code == 202
    clock.offset += 60
    fired = scheduler.tick()
    assert len(fired) == 1
    flows = sorted(item["flow"] for item in service.client.get("/api/executions").json())
    assert flows == ["hook", "nightly"]


def test_schedule_execution_sees_its_due_time(start_service, definition):
    clock = Clock()
    service = start_service(clock=clock)
    _deploy(service, definition)
    runtime = service.runtime
    scheduler = Scheduler(runtime.store, runtime.intake, runtime.instances, clock=clock)
    clock.offset += 60
    (execution_id,) = scheduler.tick()
    data = _ended(service, execution_id)
    assert data["status"] == "succeeded", data
    assert data["trigger_type"] == "schedule"
    trigger = data["result"]
    assert trigger["type"] == "schedule"
    scheduled_for = datetime.datetime.fromisoformat(trigger["scheduled_for"])
    fired_at = datetime.datetime.fromisoformat(trigger["fired_at"])
    assert scheduled_for.second == 0
    assert scheduled_for.utcoffset() == datetime.timedelta(0)
    assert scheduled_for <= fired_at


def test_enable_unknown_instance_answers_404(start_service):
    service = start_service(worker=False)
    assert service.client.post("/api/instances/acme/shop/enable").status_code == 404
    assert service.client.post("/api/instances/abcdef123/disable").status_code == 404


# -- starting executions ------------------------------------------------------------------


def test_start_flow_runs_with_input_as_trigger_body(start_service, definition):
    service = start_service()
    _deploy(service, definition, greeting="hi")
    value = {"order": 7, "lines": [1, 2], "note": "Grüße"}
    execution_id = _start(service, "acme/shop", "echo", value)
    data = _ended(service, execution_id)
    assert data["status"] == "succeeded", data
    assert data["result"] == {"body": value, "greeting": "hi"}
    assert data["flow"] == "echo"
    assert data["trigger_type"] == "manual"
    assert data["integration"] == "shop"
    assert data["version"] == "2.1"


def test_start_accepts_any_json_input(start_service, definition):
    service = start_service()
    deployment = _deploy(service, definition)
    for value in ([1, "two"], "text", 3.5, None):
        execution_id = _start(service, deployment.instance.id[:8], "echo", value)
        data = _ended(service, execution_id)
        assert data["status"] == "succeeded", data
        assert data["result"]["body"] == value
    no_body = service.client.post("/api/instances/acme/shop/flows/echo/executions")
    assert no_body.status_code == 202
    assert _ended(service, no_body.json()["execution_id"])["result"]["body"] is None


def test_start_unknown_flow_or_instance_answers_404(start_service, definition):
    service = start_service(worker=False)
    _deploy(service, definition)
    flow = service.client.post("/api/instances/acme/shop/flows/nope/executions", json={})
    assert flow.status_code == 404
    assert "nope" in flow.json()["error"]
    assert "echo" in flow.json()["error"]  # the message lists the flows there are
    instance = service.client.post("/api/instances/acme/crm/flows/echo/executions", json={})
    assert instance.status_code == 404
    assert service.client.get("/api/executions").json() == []


def test_start_on_disabled_instance_answers_409(start_service, definition):
    service = start_service(worker=False)
    _deploy(service, definition)
    service.client.post("/api/instances/acme/shop/disable")
    answer = service.client.post(
        "/api/instances/acme/shop/flows/echo/executions", json={"input": 1}
    )
    assert answer.status_code == 409
    assert "disabled" in answer.json()["error"]
    assert service.client.get("/api/executions").json() == []


def test_start_a_webhook_flow_by_hand(start_service, definition):
    """Any flow can be started with an input; a webhook flow then records trigger type api."""
    service = start_service()
    _deploy(service, definition)
    data = _ended(service, _start(service, "acme/shop", "hook", {"x": 1}))
    assert data["status"] == "succeeded"
    assert data["trigger_type"] == "api"


# -- listing and showing executions -------------------------------------------------------


@pytest.fixture
def history(start_service, definition):
    """Executions of two customers: echo succeeded twice, broken failed once, one queued."""
    service = start_service()
    acme = _deploy(service, definition, "acme")
    globex = _deploy(service, definition, "globex")
    ids = {
        "acme-echo": _start(service, "acme/shop", "echo", 1),
        "globex-echo": _start(service, "globex/shop", "echo", 2),
        "acme-broken": _start(service, "acme/shop", "broken"),
    }
    for execution_id in ids.values():
        _ended(service, execution_id)
    service.runtime.worker.stop(drain=5)  # later executions stay queued
    service.runtime.worker = None
    ids["globex-queued"] = _start(service, "globex/shop", "echo", 3)
    return service, ids, acme.instance, globex.instance


def _listed(service, **params: Any) -> list[str]:
    answer = service.client.get("/api/executions", params=params)
    assert answer.status_code == 200, (params, answer.text)
    return [item["id"] for item in answer.json()]


def test_list_executions_newest_first(history):
    service, ids, _, _ = history
    listed = _listed(service)
    assert listed == [
        ids["globex-queued"],
        ids["acme-broken"],
        ids["globex-echo"],
        ids["acme-echo"],
    ]
    first = service.client.get("/api/executions").json()[0]
    assert first["status"] == "queued"
    assert first["started_at"] is None
    assert first["trigger_type"] == "manual"


def test_list_executions_by_each_filter(history):
    service, ids, acme, globex = history
    assert _listed(service, status="failed") == [ids["acme-broken"]]
    assert _listed(service, status="queued") == [ids["globex-queued"]]
    assert set(_listed(service, status="succeeded")) == {ids["acme-echo"], ids["globex-echo"]}
    assert _listed(service, status="cancelled") == []
    assert set(_listed(service, instance=acme.id)) == {ids["acme-echo"], ids["acme-broken"]}
    assert set(_listed(service, customer="globex")) == {ids["globex-echo"], ids["globex-queued"]}
    assert _listed(service, customer="initech") == []
    assert len(_listed(service, integration="shop")) == 4
    assert _listed(service, integration="crm") == []
    assert _listed(service, flow="broken") == [ids["acme-broken"]]
    assert _listed(service, flow="echo", customer="acme") == [ids["acme-echo"]]
    assert _listed(service, limit=2) == [ids["globex-queued"], ids["acme-broken"]]
    assert _listed(service, status="succeeded", instance=globex.id) == [ids["globex-echo"]]


def test_list_executions_rejects_bad_filters(history):
    service, _, _, _ = history
    status = service.client.get("/api/executions", params={"status": "done"})
    assert status.status_code == 400
    assert "queued" in status.json()["error"]
    for limit in ("0", "1001", "ten"):
        answer = service.client.get("/api/executions", params={"limit": limit})
        assert answer.status_code == 422, limit


def test_show_execution_by_id_and_prefix(start_service, definition):
    service = start_service()
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "echo", {"order": 7})
    _ended(service, execution_id)
    for reference in (execution_id, execution_id[:8]):
        answer = service.client.get(f"/api/executions/{reference}")
        assert answer.status_code == 200, reference
        assert answer.json()["id"] == execution_id
    listed = service.client.get("/api/executions").json()[0]
    assert listed["step_runs"] == 2  # the list gives the count, the details give the runs


def test_show_execution_lists_step_runs(start_service, definition):
    service = start_service()
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "echo", {"order": 7})
    data = _ended(service, execution_id)
    runs = data["step_runs"]
    assert [run["path"] for run in runs] == ["note", "echo"]
    assert [run["action"] for run in runs] == ["log.write", "code.run"]
    assert [run["status"] for run in runs] == ["succeeded", "succeeded"]
    echo = runs[1]
    assert echo["output"] == {"body": {"order": 7}, "greeting": "hello"}
    assert echo["attempt"] == 1
    assert echo["output_size"] > 0
    assert echo["error"] is None
    assert echo["started_at"].endswith("Z")
    assert data["result"] == {"body": {"order": 7}, "greeting": "hello"}


def test_show_failed_execution(start_service, definition):
    service = start_service()
    _deploy(service, definition)
    data = _ended(service, _start(service, "acme/shop", "broken"))
    assert data["status"] == "failed"
    assert data["failed_step"] == "boom"
    assert "no such order" in data["error_message"]
    (run,) = data["step_runs"]
    assert run["status"] == "failed"
    assert run["error"]["type"] == "ValueError"
    assert "no such order" in run["error"]["message"]


def test_show_execution_output_in_blob_store(start_service, definition):
    service = start_service(SPLICE_SPILL_THRESHOLD="1024")
    _deploy(service, definition)
    data = _ended(service, _start(service, "acme/shop", "echo", "x" * 5000))
    assert data["status"] == "succeeded"
    output = data["step_runs"][1]["output"]
    assert set(output) == {"blob"}
    assert output["blob"].startswith(f"executions/{data['id']}/")


def test_unknown_execution_answers_404(start_service):
    service = start_service(worker=False)
    for path in ("/api/executions/nope", "/api/executions/nope/logs"):
        answer = service.client.get(path)
        assert answer.status_code == 404, path
        assert "nope" in answer.json()["error"]


def test_execution_logs(start_service, definition):
    service = start_service()
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "echo", 1)
    _ended(service, execution_id)
    answer = service.client.get(f"/api/executions/{execution_id[:10]}/logs")
    assert answer.status_code == 200
    lines = answer.json()
    by_message = {line["message"]: line for line in lines}
    assert by_message["echo started"]["step"] == "note"
    assert by_message["echo started"]["level"] == "info"
    assert by_message["echo started"]["time"].endswith("Z")
    assert by_message["printed by echo"]["step"] == "echo"


# -- cancelling ---------------------------------------------------------------------------


def test_cancel_queued_execution_at_once(start_service, definition):
    service = start_service(worker=False)
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "echo", 1)
    answer = service.client.post(f"/api/executions/{execution_id}/cancel")
    assert answer.status_code == 202
    assert answer.json() == {"execution_id": execution_id, "status": "cancelled"}
    data = service.client.get(f"/api/executions/{execution_id}").json()
    assert data["status"] == "cancelled"
    assert data["error_type"] == "Cancelled"
    assert data["ended_at"] is not None
    assert data["started_at"] is None
    assert data["step_runs"] == []


def test_cancelled_queued_execution_never_runs(start_service, definition, sandbox):
    """A worker started after the cancel drops the cancelled execution's queue entry."""
    service = start_service(worker=False)
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "echo", 1)
    service.client.post(f"/api/executions/{execution_id}/cancel")
    later = _start(service, "acme/shop", "echo", 2)
    service.runtime.start_worker(concurrency=2, sandbox=sandbox)
    assert service.wait_for(later).status == "succeeded"
    data = service.client.get(f"/api/executions/{execution_id}").json()
    assert data["status"] == "cancelled"
    assert data["step_runs"] == []


def test_cancel_running_execution(start_service, definition):
    service = start_service()
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "slow")
    _wait_for_log(service, execution_id, "napping")
    answer = service.client.post(f"/api/executions/{execution_id}/cancel")
    assert answer.status_code == 202
    assert answer.json() == {"execution_id": execution_id, "status": "cancelling"}
    data = _ended(service, execution_id)
    assert data["status"] == "cancelled"
    assert data["error_type"] == "Cancelled"
    assert [run["path"] for run in data["step_runs"]] == ["first", "nap"]
    first, nap = data["step_runs"]
    assert first["status"] == "succeeded"
    assert nap["status"] == "failed"
    assert nap["error"]["type"] == "Cancelled"
    assert nap["ended_at"] is not None
    assert service.runtime.slots.holders(data["instance_id"], "slow") == []


def test_cancel_ended_execution_answers_409(start_service, definition):
    service = start_service()
    _deploy(service, definition)
    execution_id = _start(service, "acme/shop", "echo", 1)
    _ended(service, execution_id)
    answer = service.client.post(f"/api/executions/{execution_id}/cancel")
    assert answer.status_code == 409
    assert "succeeded" in answer.json()["error"]
    assert service.client.get(f"/api/executions/{execution_id}").json()["status"] == "succeeded"


def test_cancel_unknown_execution_answers_404(start_service):
    service = start_service(worker=False)
    answer = service.client.post("/api/executions/0123456789/cancel")
    assert answer.status_code == 404
    assert "0123456789" in answer.json()["error"]


# -- health and OpenAPI -------------------------------------------------------------------


def test_health_checks(start_service):
    service = start_service(worker=False)
    live = service.client.get("/healthz")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


ROUTES = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/instances"),
    ("get", "/api/instances/{reference}"),
    ("get", "/api/instances/{reference}/webhooks"),
    ("post", "/api/instances/{reference}/disable"),
    ("post", "/api/instances/{reference}/enable"),
    ("post", "/api/instances/{reference}/flows/{flow}/executions"),
    ("get", "/api/executions"),
    ("get", "/api/executions/{execution_id}"),
    ("get", "/api/executions/{execution_id}/logs"),
    ("post", "/api/executions/{execution_id}/cancel"),
    ("post", "/webhooks/{token}"),
}


def test_openapi_document_lists_every_route(start_service):
    service = start_service(worker=False)
    answer = service.client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.")
    listed = {
        (method, path) for path, operations in document["paths"].items() for method in operations
    }
    missing = ROUTES - listed
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"
    docs = service.client.get("/docs")
    assert docs.status_code == 200
    assert "openapi.json" in docs.text


def _schema_types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        return {schema["type"]}
    found: set[str] = set()
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= _schema_types(option)
    return found


# Values for a query parameter of each schema type: valid ones, then ones of another type.
VALUES = {
    "string": ["acme", "", "ü ß", "queued", "a" * 300, "%00", "1"],
    "integer": ["1", "50", "1000", "0", "-1", "1.5", "ten", "", "99999999999999999999999"],
    "number": ["1", "0.5", "-3", "NaN", "x"],
    "boolean": ["true", "false", "maybe"],
}


def test_query_only_get_routes_never_answer_5xx(start_service, definition):
    """Send generated query values to every GET route that takes only query parameters.

    Valid values and values of the wrong type, alone and together, get a 2xx or 4xx
    response, never a 5xx."""
    service = start_service()
    _deploy(service, definition)
    _ended(service, _start(service, "acme/shop", "echo", 1))
    document = service.client.get("/openapi.json").json()
    checked = []
    for path, operations in document["paths"].items():
        operation = operations.get("get")
        if operation is None or "{" in path:
            continue
        parameters = operation.get("parameters", [])
        if any(parameter["in"] != "query" for parameter in parameters):
            continue
        cases: list[dict[str, str]] = [{}]
        for parameter in parameters:
            types = _schema_types(parameter.get("schema", {})) - {"null"}
            for kind in sorted(types) or ["string"]:
                cases += [{parameter["name"]: value} for value in VALUES.get(kind, ["x"])]
        if parameters:
            cases.append({parameter["name"]: "1" for parameter in parameters})
            cases.append({parameter["name"]: "zz" for parameter in parameters})
        for params in cases:
            answer = service.client.get(path, params=params)
            assert answer.status_code < 500, (path, params, answer.status_code, answer.text)
            if answer.status_code >= 400:
                assert answer.status_code in (400, 404, 422), (path, params, answer.text)
        checked.append(path)
    assert {"/healthz", "/readyz", "/api/instances", "/api/executions"} <= set(checked)
