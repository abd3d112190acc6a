"""Which flows read the parsed body of a webhook trigger (the child skips parsing for others)."""

from __future__ import annotations

import pytest

from splice.engine.requests import reads_trigger_body, webhook_trigger


def _flow(*texts: str, result: str | None = None) -> dict:
    steps = [
        {"id": f"s{i}", "action": "log.write", "inputs": {"message": t}}
        for i, t in enumerate(texts)
    ]
    return {"trigger": {"type": "webhook"}, "steps": steps, "result": result}


@pytest.mark.parametrize(
    "text",
    [
        "{{ trigger.body.id }}",
        "{{ trigger.body_kind }}",
        "{{ trigger.body_problem }}",
        "{{ trigger }}",
        "{{ trigger['body'] }}",
        "{% for key in trigger %}{{ key }}{% endfor %}",
    ],
)
def test_body_read(text):
    assert reads_trigger_body(_flow(text))


@pytest.mark.parametrize(
    "text",
    ["{{ trigger.raw }}", "{{ trigger.headers['x-id'] }}", "{{ trigger.query.page }}", "plain"],
)
def test_body_not_read(text):
    assert not reads_trigger_body(_flow(text, "{{ trigger.method }}"))


def test_body_read_by_result():
    assert reads_trigger_body(_flow("{{ trigger.raw }}", result="{{ trigger.body }}"))


def test_unparsed_trigger_keeps_raw():
    trigger = webhook_trigger(
        method="POST",
        headers=[("content-type", "application/json")],
        query_string=b"a=1",
        body=b'{"x": 1}',
        parse=False,
    )
    assert trigger["raw"] == b'{"x": 1}'
    assert trigger["query"] == {"a": "1"}
    assert trigger["body"] is None
