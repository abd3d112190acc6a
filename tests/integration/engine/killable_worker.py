"""A worker process for tests that kill it: it runs one execution with run_execution.

Run as ``python killable_worker.py OPTIONS_JSON``. It prints one JSON line with the pid of
its sandbox template once the template is ready, then runs the execution.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from splice.config import resolve_config
from splice.definition import load_integration
from splice.local import LocalRun
from splice.settings import Settings


def main(options: dict) -> None:
    settings = Settings.from_env(options["environment"])
    with LocalRun.open(settings) as local:
        local.sandbox.wait_ready()
        template = local.sandbox._process
        assert template is not None
        print(json.dumps({"template": template.pid}), flush=True)
        integration = load_integration(Path(options["definition"]))
        config = resolve_config(integration, assignments=options["assignments"], environ={})
        local.supervisor.run_execution(
            options["execution_id"],
            integration,
            flow="main",
            config=config,
            trigger={"type": "manual"},
        )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
