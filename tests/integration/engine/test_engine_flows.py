"""The engine with real SQLite and a real forked sandbox: step records and control flow."""

from __future__ import annotations

from typing import Any

from splice.engine.values import decode
from splice.store.records import StepRunRecord

HEADER = """\
key: test
name: Test
flows:
  main:
    trigger: {type: manual}
"""

STEPS_CODE = """\
import time

from splice.sdk import ActionError


def double(context, *, value):
    return value * 2


def echo(context, **args):
    return args


def slow_echo(context, *, value, delays):
    time.sleep(delays.get(str(value), 0))
    return value


def fail_on(context, *, value, bad):
    if value in bad:
        raise ValueError(f"item {value} is bad")
    return value


def flaky(context, *, succeed_on):
    if context.attempt < succeed_on:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return context.attempt


def permanent(context):
    raise ActionError("the record is invalid", retryable=False)
"""


def run_flow(local, write_integration, steps: str, **options: Any):
    path = write_integration(HEADER + steps, {"steps.py": STEPS_CODE})
    return local.run(path, environ={}, **options)


def runs_of(local, outcome) -> list[StepRunRecord]:
    return local.store.step_runs(outcome.execution_id)


def output_of(run: StepRunRecord) -> Any:
    assert run.output is not None
    return decode(run.output, run.output_encoding or "msgpack")


def by_path(runs: list[StepRunRecord]) -> dict[str, StepRunRecord]:
    return {run.path: run for run in runs}


def code(step_id: str, function: str, args: str, indent: int = 6, extra: str = "") -> str:
    pad = " " * indent
    return (
        f"{pad}- id: {step_id}\n{pad}  action: code.run\n{extra}"
        f"{pad}  inputs: {{file: steps.py, function: {function}, args: {args}}}\n"
    )


TWO_STEPS = (
    "    steps:\n"
    + code("first", "double", "{value: 21}")
    + code("second", "echo", '{got: "{{ steps.first }}"}')
)


def test_step_records(local, write_integration):
    """Each step leaves one succeeded step run with attempt 1, sizes and its output."""
    outcome = run_flow(local, write_integration, TWO_STEPS)
    runs = runs_of(local, outcome)
    assert [(r.path, r.kind, r.action, r.status, r.attempt) for r in runs] == [
        ("first", "action", "code.run", "succeeded", 1),
        ("second", "action", "code.run", "succeeded", 1),
    ]
    assert output_of(runs[0]) == 42
    assert output_of(runs[1]) == {"got": 42}
    assert runs[1].output_size == len(runs[1].output or b"")
    assert runs[1].input_size > 0


def test_execution_record(local, write_integration):
    """The execution record contains the status, counts and the last step's output as result."""
    outcome = run_flow(local, write_integration, TWO_STEPS)
    record = local.store.get_execution(outcome.execution_id)
    assert record is not None
    assert (record.status, record.step_runs, record.continued_failures) == ("succeeded", 2, 0)
    assert outcome.result == {"got": 42}
    assert decode(record.result or b"", record.result_encoding or "msgpack") == {"got": 42}


def test_flow_result_expression(local, write_integration):
    """A flow's result expression decides the execution's result."""
    steps = TWO_STEPS.replace(
        "    steps:\n", '    result: "{{ [steps.first, steps.second.got] }}"\n    steps:\n'
    )
    outcome = run_flow(local, write_integration, steps)
    assert outcome.result == [42, 42]


def test_trigger_body(local, write_integration):
    """The trigger's body is visible to expressions."""
    steps = "    steps:\n" + code("first", "echo", '{body: "{{ trigger.body }}"}')
    outcome = run_flow(
        local, write_integration, steps, trigger={"type": "manual", "body": {"id": 7}}
    )
    assert outcome.result == {"body": {"id": 7}}


BRANCH = (
    """\
    steps:
      - id: pick
        branch:
          - when: "{{ trigger.body.n > 10 }}"
            steps:
"""
    + code("big", "echo", "{size: big}", 14)
    + """\
          - when: "{{ trigger.body.n > 5 }}"
            steps:
"""
    + code("medium", "echo", "{size: medium}", 14)
    + """\
          - when: "{{ trigger.body.n > 0 }}"
            steps:
"""
    + code("small", "echo", "{size: small}", 14)
)


def test_branch_first_match(local, write_integration):
    """The first case whose condition is true runs, and only that one."""
    outcome = run_flow(
        local, write_integration, BRANCH, trigger={"type": "manual", "body": {"n": 20}}
    )
    paths = [run.path for run in runs_of(local, outcome)]
    assert paths == ["pick.big", "pick"]
    assert outcome.result == {"size": "big"}


def test_branch_later_case(local, write_integration):
    """A later case runs when the earlier ones do not hold."""
    outcome = run_flow(
        local, write_integration, BRANCH, trigger={"type": "manual", "body": {"n": 7}}
    )
    assert outcome.result == {"size": "medium"}


def test_branch_else(local, write_integration):
    """else runs when no case holds."""
    steps = BRANCH + "        else:\n" + code("other", "echo", "{size: none}", 10)
    outcome = run_flow(
        local, write_integration, steps, trigger={"type": "manual", "body": {"n": -1}}
    )
    assert outcome.result == {"size": "none"}


def test_branch_none(local, write_integration):
    """Without a matching case nor else, the branch succeeds with null."""
    outcome = run_flow(
        local, write_integration, BRANCH, trigger={"type": "manual", "body": {"n": -1}}
    )
    runs = runs_of(local, outcome)
    assert [(r.path, r.status) for r in runs] == [("pick", "succeeded")]
    assert outcome.status == "succeeded"
    assert outcome.result is None


def loop(
    items: str,
    body: str,
    *,
    concurrency: int = 1,
    on_error: str = "fail",
    result: str | None = None,
) -> str:
    text = (
        f"    steps:\n      - id: each\n        loop: {items}\n"
        f"        concurrency: {concurrency}\n        on_error: {on_error}\n"
    )
    if result:
        text += f"        result: {result!r}\n"
    return text + "        steps:\n" + body


# Later items finish first, so order comes from the index, not from completion.
DELAYS = '{"0": 0.3, "1": 0.2, "2": 0.1}'


def test_loop_order_sequential(local, write_integration):
    """With concurrency 1 the loop's results follow the items."""
    body = code("slow", "slow_echo", f"{{value: '{{{{ item }}}}', delays: {DELAYS}}}", 10)
    outcome = run_flow(local, write_integration, loop("[0, 1, 2, 3]", body))
    assert outcome.result["results"] == [0, 1, 2, 3]


def test_loop_step_runs_counted(local, write_integration):
    """A successful loop records its loop step and one run per item, all succeeded."""
    body = code("slow", "slow_echo", f"{{value: '{{{{ item }}}}', delays: {DELAYS}}}", 10)
    outcome = run_flow(local, write_integration, loop("[0, 1, 2]", body))
    runs = runs_of(local, outcome)
    assert 4 == outcome.step_runs
    assert 4 == len(runs)
    assert {"succeeded"} == {run.status for run in runs}


def test_loop_order_concurrent(local, write_integration):
    """With concurrency 4 the results still follow the items, whatever finishes first."""
    body = code("slow", "slow_echo", f"{{value: '{{{{ item }}}}', delays: {DELAYS}}}", 10)
    outcome = run_flow(local, write_integration, loop("[0, 1, 2, 3]", body, concurrency=4))
    assert outcome.result["results"] == [0, 1, 2, 3]
    inner = [run.path for run in runs_of(local, outcome) if run.kind == "action"]
    assert sorted(inner) == ["each[0].slow", "each[1].slow", "each[2].slow", "each[3].slow"]


def test_loop_concurrent_overlaps(local, write_integration):
    """Concurrent iterations overlap: every item starts before the first one ends."""
    body = code(
        "slow",
        "slow_echo",
        "{value: '{{ item }}', delays: {'0': 0.3, '1': 0.3, '2': 0.3, '3': 0.3}}",
        10,
    )
    outcome = run_flow(local, write_integration, loop("[0, 1, 2, 3]", body, concurrency=4))
    runs = [run for run in runs_of(local, outcome) if run.kind == "action"]
    first_end = min(run.ended_at for run in runs)
    assert all(run.started_at < first_end for run in runs)


def test_loop_fail_stops(local, write_integration):
    """on_error fail: the failing item stops the loop and the execution fails."""
    body = code("check", "fail_on", "{value: '{{ item }}', bad: [1]}", 10)
    outcome = run_flow(
        local, write_integration, loop("[0, 1, 2, 3]", body) + code("after", "echo", "{}")
    )
    runs = runs_of(local, outcome)
    assert outcome.status == "failed"
    assert outcome.failed_step == "each[1].check"
    assert outcome.error_message == "item 1 is bad"
    assert [r.path for r in runs if r.kind == "action"] == ["each[0].check", "each[1].check"]
    assert by_path(runs)["each"].status == "failed"


def test_loop_fail_record(local, write_integration):
    """A failed concurrent loop is recorded as failed with the item's error.

    The first item fails while later ones still wait, so their futures are cancelled.
    """
    body = code("check", "fail_on", "{value: '{{ item }}', bad: [0]}", 10)
    items = str(list(range(40)))
    outcome = run_flow(local, write_integration, loop(items, body, concurrency=2))
    record = local.store.get_execution(outcome.execution_id)
    assert record is not None
    assert record.status == "failed"
    assert record.error_type == "ValueError"


def test_loop_continue(local, write_integration):
    """on_error continue: the failed items are recorded and the others go on."""
    body = code("check", "fail_on", "{value: '{{ item }}', bad: [1, 3]}", 10)
    outcome = run_flow(
        local, write_integration, loop("[0, 1, 2, 3, 4]", body, concurrency=4, on_error="continue")
    )
    assert outcome.status == "succeeded"
    assert outcome.continued_failures == 2
    assert outcome.result["results"] == [0, None, 2, None, 4]
    assert outcome.result["errors"] == [
        {"index": 1, "item": 1, "step": "each[1].check", "error": "item 1 is bad"},
        {"index": 3, "item": 3, "step": "each[3].check", "error": "item 3 is bad"},
    ]
    assert (outcome.result["succeeded"], outcome.result["failed"]) == (3, 2)


def test_loop_continue_step_runs(local, write_integration):
    """The failed iteration's step run keeps the item and the error, marked continued."""
    body = code("check", "fail_on", "{value: '{{ item }}', bad: ['b']}", 10)
    outcome = run_flow(local, write_integration, loop("[a, b, c]", body, on_error="continue"))
    iteration = by_path(runs_of(local, outcome))["each[1]"]
    assert (iteration.kind, iteration.status, iteration.continued) == ("iteration", "failed", True)
    assert decode(iteration.item or b"", iteration.item_encoding or "msgpack") == "b"
    assert (iteration.error_type, iteration.error_message) == ("ValueError", "item b is bad")
    record = local.store.get_execution(outcome.execution_id)
    assert record is not None
    assert (record.status, record.continued_failures) == ("succeeded", 1)


def test_loop_result_expression(local, write_integration):
    """A loop's result expression gives each iteration's entry."""
    body = code("twice", "double", "{value: '{{ item }}'}", 10)
    outcome = run_flow(
        local, write_integration, loop("[1, 2]", body, result="{{ [index, steps.twice] }}")
    )
    assert outcome.result["results"] == [[0, 2], [1, 4]]


def test_nested_loops(local, write_integration):
    """An inner loop reads the outer loop's index through loops.outer.index."""
    steps = """\
    steps:
      - id: outer
        loop: [a, b]
        steps:
          - id: inner
            loop: [x, y]
            steps:
""" + code(
        "pair",
        "echo",
        '{label: "{{ loops.outer.item }}{{ item }}", '
        'at: "{{ [loops.outer.index, loops.inner.index, index] }}"}',
        14,
    )
    outcome = run_flow(local, write_integration, steps)
    results = [r["results"] for r in outcome.result["results"]]
    assert results == [
        [{"label": "ax", "at": [0, 0, 0]}, {"label": "ay", "at": [0, 1, 1]}],
        [{"label": "bx", "at": [1, 0, 0]}, {"label": "by", "at": [1, 1, 1]}],
    ]
    paths = [run.path for run in runs_of(local, outcome) if run.kind == "action"]
    assert paths == [
        "outer[0].inner[0].pair",
        "outer[0].inner[1].pair",
        "outer[1].inner[0].pair",
        "outer[1].inner[1].pair",
    ]


RETRY = "        on_error: {{retry: {{attempts: 3, delay: 0.05, backoff: 2}}, then: {then}}}\n"


def test_retry_then_succeeds(local, write_integration):
    """A step that fails twice and then succeeds leaves three attempts."""
    steps = "    steps:\n" + code(
        "flaky", "flaky", "{succeed_on: 3}", extra=RETRY.format(then="fail")
    )
    outcome = run_flow(local, write_integration, steps)
    runs = runs_of(local, outcome)
    assert [(r.attempt, r.status) for r in runs] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert outcome.result == 3


def test_retry_backoff(local, write_integration):
    """Retries wait delay, then delay * backoff: 0.05 s and 0.1 s here."""
    steps = "    steps:\n" + code(
        "flaky", "flaky", "{succeed_on: 3}", extra=RETRY.format(then="fail")
    )
    runs = runs_of(local, run_flow(local, write_integration, steps))
    gaps = [(runs[i + 1].started_at - runs[i].ended_at).total_seconds() for i in range(2)]
    # Lower bounds are the policy; upper bounds only tell the two delays apart on a busy machine.
    assert 0.05 <= gaps[0] < 0.5
    assert 0.1 <= gaps[1] < 1.0


def test_retry_then_fail(local, write_integration):
    """After the last attempt, then: fail fails the execution."""
    steps = "    steps:\n" + code(
        "flaky", "flaky", "{succeed_on: 9}", extra=RETRY.format(then="fail")
    )
    outcome = run_flow(local, write_integration, steps)
    runs = runs_of(local, outcome)
    assert [r.attempt for r in runs] == [1, 2, 3]
    assert outcome.status == "failed"
    assert (outcome.error_type, outcome.error_message) == ("ConnectionError", "attempt 3 failed")


def test_retry_then_continue(local, write_integration):
    """After the last attempt, then: continue goes on to the next step."""
    steps = (
        "    steps:\n"
        + code("flaky", "flaky", "{succeed_on: 9}", extra=RETRY.format(then="continue"))
        + code("after", "echo", '{flaky: "{{ steps.flaky }}"}')
    )
    outcome = run_flow(local, write_integration, steps)
    runs = runs_of(local, outcome)
    assert [(r.path, r.attempt, r.status) for r in runs] == [
        ("flaky", 1, "failed"),
        ("flaky", 2, "failed"),
        ("flaky", 3, "failed"),
        ("after", 1, "succeeded"),
    ]
    assert runs[2].continued
    assert (outcome.status, outcome.continued_failures) == ("succeeded", 1)
    assert outcome.result == {"flaky": None}


def test_not_retryable(local, write_integration):
    """ActionError(retryable=False) is not retried, whatever the policy."""
    steps = "    steps:\n" + code("bad", "permanent", "{}", extra=RETRY.format(then="fail"))
    outcome = run_flow(local, write_integration, steps)
    runs = runs_of(local, outcome)
    assert [r.attempt for r in runs] == [1]
    assert (outcome.error_type, outcome.error_message) == ("ActionError", "the record is invalid")


def test_expression_error_fails(local, write_integration):
    """An expression that fails at run time fails the step with ExpressionError."""
    steps = (
        "    steps:\n"
        + code("first", "echo", "{}")
        + code("second", "echo", '{x: "{{ steps.first.missing }}"}')
    )
    outcome = run_flow(local, write_integration, steps)
    assert (outcome.status, outcome.failed_step, outcome.error_type) == (
        "failed",
        "second",
        "ExpressionError",
    )
