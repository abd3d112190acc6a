"""Trigger settings in definitions: schedule catch-up and cron checks, webhook signatures."""

from __future__ import annotations

import pytest

from splice.definition import load_integration
from splice.definition.model import ScheduleTrigger, WebhookTrigger
from splice.errors import DefinitionError

SCHEDULE = """\
key: test
name: Test
flows:
  nightly:
    trigger: {{type: schedule, cron: "{cron}", timezone: Europe/Berlin{extra}}}
    steps:
      - {{id: a, action: log.write, inputs: {{message: hi}}}}
"""
WEBHOOK = """\
key: test
name: Test
config:
  hook_secret: {{type: {kind}}}
flows:
  hook:
    trigger: {{type: webhook, signature: {{scheme: github, secret: {secret}}}}}
    steps:
      - {{id: a, action: log.write, inputs: {{message: hi}}}}
"""


def _problems(write_integration, definition: str) -> list[str]:
    with pytest.raises(DefinitionError) as raised:
        load_integration(write_integration(definition))
    return [str(problem) for problem in raised.value.problems]


def test_catch_up_once_loads(write_integration):
    """A schedule's catch_up policy is stored with the trigger."""
    path = write_integration(SCHEDULE.format(cron="0 6 * * 1-5", extra=", catch_up: once"))
    trigger = load_integration(path).flows["nightly"].trigger
    assert isinstance(trigger, ScheduleTrigger)
    assert "once" == trigger.catch_up


def test_catch_up_default_skip(write_integration):
    """Without catch_up, missed due times are skipped."""
    path = write_integration(SCHEDULE.format(cron="0 6 * * 1-5", extra=""))
    trigger = load_integration(path).flows["nightly"].trigger
    assert isinstance(trigger, ScheduleTrigger)
    assert "skip" == trigger.catch_up


def test_catch_up_unknown_value(write_integration):
    """An unknown catch_up policy is located and lists the allowed values."""
    problems = _problems(
        write_integration, SCHEDULE.format(cron="0 6 * * *", extra=", catch_up: all")
    )
    assert 1 == len(problems)
    assert "trigger.catch_up" in problems[0]
    assert "'skip' or 'once'" in problems[0]


def test_cron_never_fires(write_integration):
    """A cron whose day exists in none of its months is rejected when loading."""
    problems = _problems(write_integration, SCHEDULE.format(cron="0 0 31 2 *", extra=""))
    assert 1 == len(problems)
    assert ":5:" in problems[0]
    assert "never fires" in problems[0]


def test_signature_secret_declared(write_integration):
    """A webhook signature naming a secret config variable loads with its settings."""
    path = write_integration(WEBHOOK.format(kind="secret", secret="hook_secret"))
    trigger = load_integration(path).flows["hook"].trigger
    assert isinstance(trigger, WebhookTrigger)
    assert trigger.signature is not None
    assert "github" == trigger.signature.scheme


def test_signature_secret_wrong_type(write_integration):
    """The signing secret must be a config variable of type secret."""
    problems = _problems(write_integration, WEBHOOK.format(kind="string", secret="hook_secret"))
    assert 1 == len(problems)
    assert "trigger.signature.secret" in problems[0]
    assert "which is a string" in problems[0]


def test_signature_secret_undeclared(write_integration):
    """A signing secret that names no config variable is an error with the fix."""
    problems = _problems(write_integration, WEBHOOK.format(kind="secret", secret="other"))
    assert 1 == len(problems)
    assert "which is not declared" in problems[0]
    assert "type: secret" in problems[0]
