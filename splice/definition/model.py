"""The validated integration model that YAML and code-native definitions both produce."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from splice.triggers.signatures import SignatureSettings

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
STEP_ID_PATTERN = r"^[a-z_][a-z0-9_]*$"
CONFIG_TYPES = ("string", "number", "boolean", "list", "json", "secret", "connection")
CONNECTION_TYPES = ("api_key", "bearer", "basic", "aws")

# Fields of each connection type, and which of them are secret.
CONNECTION_FIELDS: dict[str, dict[str, bool]] = {
    "api_key": {"api_key": True, "header": False, "in": False, "name": False},
    "bearer": {"token": True},
    "basic": {"username": False, "password": True},
    "aws": {
        "access_key_id": False,
        "secret_access_key": True,
        "session_token": True,
        "region": False,
        "endpoint_url": False,
    },
}
CONNECTION_REQUIRED: dict[str, tuple[str, ...]] = {
    "api_key": ("api_key",),
    "bearer": ("token",),
    "basic": ("username", "password"),
    "aws": ("access_key_id", "secret_access_key"),
}
CONNECTION_DEFAULTS: dict[str, dict[str, str]] = {
    "api_key": {"header": "X-API-Key", "in": "header", "name": "api_key"},
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConfigVariable(_Model):
    """A typed per-instance setting. A ``connection`` contains a set of credential fields."""

    type: Literal["string", "number", "boolean", "list", "json", "secret", "connection"]
    required: bool = False
    default: Any = None
    description: str = ""
    connection: Literal["api_key", "bearer", "basic", "aws"] | None = None
    # A folder (or a list of folders) on the host that executions may read, or also write.
    grant: Literal["read", "write"] | None = None

    @model_validator(mode="after")
    def _check_connection(self) -> ConfigVariable:
        if self.grant is not None and self.type not in ("string", "list"):
            raise ValueError(
                "`grant:` applies only to string and list config variables holding folder paths"
            )
        if self.type == "connection" and self.connection is None:
            raise ValueError(
                "a connection config variable needs `connection:` naming its type; "
                f"add `connection:` with one of {', '.join(CONNECTION_TYPES)}"
            )
        if self.type != "connection" and self.connection is not None:
            raise ValueError(
                "`connection:` applies only to config variables of type connection; "
                "remove it or set `type: connection`"
            )
        return self


class ManualTrigger(_Model):
    type: Literal["manual"]


class DeliveryId(_Model):
    """The place of a webhook delivery's id: one header, or one field of the body."""

    header: str | None = Field(None, min_length=1, max_length=200)
    body: str | None = Field(None, min_length=1, max_length=500)  # a dotted path, e.g. data.id
    # A delivery without the id is rejected with 400 when required, else it is not checked.
    required: bool = True

    @model_validator(mode="after")
    def _exactly_one(self) -> DeliveryId:
        if (self.header is None) == (self.body is None):
            raise ValueError(
                "delivery_id needs exactly one of `header` (such as X-GitHub-Delivery) or "
                "`body` (a dotted path such as data.id)"
            )
        return self


class WebhookTrigger(_Model):
    type: Literal["webhook"]
    sync: bool = False
    # Seconds a synchronous webhook waits for the execution; SPLICE_WEBHOOK_SYNC_TIMEOUT
    # when not set here.
    sync_timeout: float | None = Field(None, gt=0, le=3600)
    signature: SignatureSettings | None = None  # see docs/webhooks.md
    delivery_id: DeliveryId | None = None  # repeated deliveries start nothing new


class ScheduleTrigger(_Model):
    type: Literal["schedule"]
    cron: str
    timezone: str = "UTC"
    catch_up: Literal["skip", "once"] = "skip"  # after downtime; see docs/schedules.md

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if value.startswith("{{"):
            return value  # a schedule taken from a config variable is checked when deployed
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(
                f"cron {value!r} has {len(fields)} fields instead of five; write minute hour "
                "day month weekday, such as '0 6 * * 1-5'"
            )
        for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
            if not _cron_field_valid(text, low, high, names):
                raise ValueError(
                    f"cron {value!r} has an invalid {name} field {text!r}; use *, numbers "
                    f"from {low} to {high}, ranges (a-b), lists (a,b) and steps (*/n)"
                )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
        return value


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Name, lowest and highest value, and accepted names (numbered from the lowest) of each field.
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("weekday", 0, 7, _WEEKDAYS),  # 0 and 7 are both Sunday
)


def _cron_field_valid(text: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    """Check one cron field: ``*``, values, ``a-b`` ranges and ``/n`` steps, comma-separated."""
    for part in text.split(","):
        span, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return False
        if span == "*":
            continue
        bounds = span.split("-")
        if len(bounds) > 2:
            return False
        values = [_cron_value(bound, low, names) for bound in bounds]
        if any(value is None or not low <= value <= high for value in values):
            return False
    return True


def _cron_value(text: str, low: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        return int(text)
    if text.lower() in names:
        return names.index(text.lower()) + low
    return None


Trigger = Annotated[ManualTrigger | WebhookTrigger | ScheduleTrigger, Field(discriminator="type")]


class Retry(_Model):
    attempts: int = Field(3, ge=1, le=100)
    delay: float = Field(1.0, ge=0, description="seconds before the first retry")
    backoff: float = Field(2.0, ge=1, description="factor applied to the delay after each retry")
    max_delay: float = Field(300.0, ge=0, description="upper bound of one delay, in seconds")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry)."""
        return float(min(self.max_delay, self.delay * self.backoff ** (attempt - 2)))


class RetryPolicy(_Model):
    retry: Retry
    then: Literal["fail", "continue"] = "fail"


OnError = Literal["fail", "continue"] | RetryPolicy


class _StepBase(_Model):
    id: str = Field(pattern=STEP_ID_PATTERN)
    description: str = ""
    on_error: OnError = "fail"

    @property
    def final_policy(self) -> str:
        """What happens after the last attempt fails: ``fail`` or ``continue``."""
        return self.on_error.then if isinstance(self.on_error, RetryPolicy) else self.on_error

    @property
    def retry(self) -> Retry | None:
        return self.on_error.retry if isinstance(self.on_error, RetryPolicy) else None


class ActionStep(_StepBase):
    action: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class LoopStep(_StepBase):
    loop: str | list[Any]
    steps: list[Step] = Field(min_length=1)
    concurrency: int = Field(1, ge=1, le=64)
    result: str | None = None


class BranchCase(_Model):
    when: str
    steps: list[Step] = Field(min_length=1)


class BranchStep(_StepBase):
    branch: list[BranchCase] = Field(min_length=1)
    else_: list[Step] = Field(default_factory=list, alias="else")


def _step_kind(value: Any) -> str | None:
    data = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    for kind in ("action", "loop", "branch"):
        if kind in data:
            return kind
    return None


Step = Annotated[
    Annotated[ActionStep, Tag("action")]
    | Annotated[LoopStep, Tag("loop")]
    | Annotated[BranchStep, Tag("branch")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs one of `action`, `loop` or `branch`",
    ),
]


class Flow(_Model):
    trigger: Trigger
    steps: list[Step] = Field(min_length=1)
    description: str = ""
    result: str | None = None
    # Executions of this flow that may run at once for one instance; none means no limit.
    concurrency: int | None = Field(None, ge=1, le=10_000)


class Integration(_Model):
    key: str = Field(pattern=KEY_PATTERN)
    name: str = Field(min_length=1)
    description: str = ""
    version: str | None = None
    config: dict[str, ConfigVariable] = Field(default_factory=dict)
    flows: dict[str, Flow] = Field(min_length=1)
    # Python packages the customer code imports, as pip requirement strings.
    requirements: list[str] = Field(default_factory=list)

    @field_validator("requirements")
    @classmethod
    def _valid_requirements(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                Requirement(text)
            except InvalidRequirement as error:
                raise ValueError(
                    f"requirement {text!r} is invalid ({error}); write it as pip does, "
                    "such as 'python-dateutil>=2.8,<3'"
                ) from None
        return value

    # Where the definition came from, and the customer code files it uses by relative path.
    _source_path: str | None = PrivateAttr(default=None)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def source_path(self) -> str | None:
        return self._source_path

    @property
    def sources(self) -> dict[str, str]:
        return self._sources

    def flow(self, name: str | None) -> tuple[str, Flow]:
        """Return the named flow, or the only flow when ``name`` is None."""
        if name is None:
            if len(self.flows) == 1:
                return next(iter(self.flows.items()))
            raise KeyError(
                f"integration {self.key!r} has flows {', '.join(self.flows)}; "
                "choose one with --flow"
            )
        if name not in self.flows:
            raise KeyError(
                f"integration {self.key!r} has no flow {name!r}; its flows: {', '.join(self.flows)}"
            )
        return name, self.flows[name]


LoopStep.model_rebuild()
BranchCase.model_rebuild()
BranchStep.model_rebuild()
Flow.model_rebuild()
Integration.model_rebuild()
