"""The description of one execution that the supervisor sends to the sandboxed child."""

from __future__ import annotations

from typing import Any

import msgspec


class ExecutionSpec(msgspec.Struct, omit_defaults=True):
    execution_id: str
    integration: dict[str, Any]  # Integration.model_dump(by_alias=True)
    sources: dict[str, str]  # customer code files by relative path
    flow: str
    config: dict[str, Any]
    trigger: dict[str, Any]
    secrets: list[str]  # values to mask in everything recorded
    scratch_dir: str
    spill_threshold: int
    log_limit: int
    environment: dict[str, str] = {}
    working_dir: str | None = None  # where relative file paths are taken from
    grants: list[tuple[str, bool]] = []  # host folders bound in: (path, writable)
    timeout: float = 0.0  # the wall-clock limit, in seconds, for the stop message
    packages_dir: str | None = None  # the integration's installed requirements


encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(ExecutionSpec)
