"""Service commands: serve and its roles, deploy, instances, start and cancel executions."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from splice.cli.main import (
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    _fail,
    _read_input,
    cli,
    executions,
    stderr,
)
from splice.errors import SpliceError

logger = logging.getLogger("splice.service")

DEPLOY_EPILOG = """
\b
Example:
  splice deploy examples/invoice-sync/integration.yaml --customer acme \\
      --config inbox=/srv/acme/inbox --config accounting_url=http://127.0.0.1:8700 \\
      --config accounting.api_key=KEY
"""


def _settings(ctx: click.Context, host: str | None = None, port: int | None = None) -> Any:
    """Read the SPLICE_* settings, with --host and --port taking precedence; exit if invalid."""
    import dataclasses

    from splice.settings import Settings

    try:
        settings = Settings.from_env()
    except SpliceError as error:
        _fail(ctx, error)
    service = settings.service
    if host is not None or port is not None:
        service = dataclasses.replace(service, host=host or service.host, port=port or service.port)
        settings = dataclasses.replace(settings, service=service)
    return settings


def _runtime(ctx: click.Context, settings: Any) -> Any:
    """Open the runtime's backends; print the error and exit when one cannot be opened."""
    from splice.service.runtime import Runtime

    try:
        return Runtime(settings)
    except SpliceError as error:
        _fail(ctx, error)


def _service_logging() -> None:
    """Log at INFO or below, but keep the access log and HTTP client logs at WARNING."""
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve_http(runtime: Any, settings: Any) -> None:
    """Serve the API with uvicorn until SIGINT or SIGTERM."""
    import uvicorn

    from splice.api import create_app

    service = settings.service
    config = uvicorn.Config(
        create_app(runtime),
        host=service.host,
        port=service.port,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # Without SPLICE_PUBLIC_URL the base URL is the listening address.
    listening = service.base_url()
    if service.public_url:
        listening = f"http://{service.host}:{service.port}"
    stderr.print(
        f"splice: listening on {listening} (webhook URLs use {service.base_url()})",
        markup=False,
    )
    # uvicorn raises the signal that stopped it again once it has shut down. Ignoring it
    # then lets the caller drain the worker instead of dying by the default action.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore_signal)
    server.run()  # returns on SIGINT or SIGTERM


def _ignore_signal(signum: int, frame: Any) -> None:
    """Log a repeated stop signal and keep draining."""
    logger.debug("signal %d received while stopping; the drain goes on", signum)


def _has(module: str) -> bool:
    """Return whether ``module`` is installed."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stop.wait(3600):
        pass


def _listen_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the --host and --port options of the commands that serve HTTP."""
    command = click.option(
        "--port",
        type=click.IntRange(1, 65535),
        help="TCP port to listen on [default: SPLICE_PORT or 8000].",
    )(command)
    return click.option("--host", help="Address to listen on [default: SPLICE_HOST or 127.0.0.1].")(
        command
    )


@cli.command()
@_listen_options
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run API, webhooks, worker, scheduler, retention and recovery in one process.

    On the embedded default (SQLite, the database queue, the local blob folder) nothing else
    is needed. SIGTERM or Ctrl-C stops accepting, then lets running executions finish for up
    to SPLICE_DRAIN_TIMEOUT seconds.
    """
    settings = _settings(ctx, host, port)
    _service_logging()
    runtime = _runtime(ctx, settings)
    try:
        runtime.start_relay()
        runtime.listen_for_completions()
        runtime.start_worker()
        runtime.start_scheduler()
        runtime.start_retention()
        runtime.start_recovery()
        _serve_http(runtime, settings)
    except SpliceError as error:
        runtime.close(drain=0)
        _fail(ctx, error)
    except SystemExit:
        # uvicorn exits when it cannot listen, for example when the port is in use, so stop
        # the roles that already started.
        runtime.close(drain=0)
        raise
    stderr.print("splice: stopping; running executions finish first", markup=False)
    runtime.close()


@cli.command()
@_listen_options
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the API and webhook receiver (and the outbox relay when SPLICE_QUEUE_URL is set)."""
    settings = _settings(ctx, host, port)
    _service_logging()
    runtime = _runtime(ctx, settings)
    try:
        runtime.start_relay()
        runtime.listen_for_completions()
        _serve_http(runtime, settings)
    except SpliceError as error:
        _fail(ctx, error)  # exits, and the finally block closes the runtime
    finally:
        runtime.close()


@cli.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help="Maximum number of executions run at once [default: SPLICE_WORKER_CONCURRENCY or 8].",
)
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None) -> None:
    """Run executions from the queue until SIGTERM, then drain them.

    Running executions get SPLICE_DRAIN_TIMEOUT seconds to finish. The exit status is 1 when
    some were still running, and another worker resumes those once their leases expire.
    """
    settings = _settings(ctx)
    _service_logging()
    runtime = _runtime(ctx, settings)
    try:
        # No relay here: the API and the scheduler relay the outbox, so workers added for
        # capacity add no polling of the database.
        runtime.start_worker(concurrency=concurrency)
        stderr.print(f"splice: worker {runtime.name} running", markup=False)
        _wait_for_signal()
    except SpliceError as error:
        runtime.close(drain=0)
        _fail(ctx, error)
    stderr.print("splice: worker draining", markup=False)
    drained = runtime.close()
    ctx.exit(EXIT_SUCCEEDED if drained else EXIT_FAILED)


@cli.command()
@click.pass_context
def scheduler(ctx: click.Context) -> None:
    """Fire the schedules of every enabled instance and prune old executions.

    It also relays the outbox when SPLICE_QUEUE_URL is set, and queues again the executions
    that a queue lost.
    """
    settings = _settings(ctx)
    _service_logging()
    runtime = _runtime(ctx, settings)
    try:
        runtime.start_relay()
        runtime.start_scheduler()
        runtime.start_retention()
        runtime.start_recovery()
        stderr.print(f"splice: scheduler {runtime.name} running", markup=False)
        _wait_for_signal()
    except SpliceError as error:
        _fail(ctx, error)  # exits, and the finally block closes the runtime
    finally:
        runtime.close()


@cli.command(epilog=DEPLOY_EPILOG)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--customer", required=True, help="Name of the customer, who is created when new.")
@click.option(
    "--config",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a config value of this customer's instance (repeatable).",
)
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read config values from this YAML or JSON file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the deployment as JSON.")
@click.pass_context
def deploy(
    ctx: click.Context,
    file: Path,
    customer: str,
    assignments: tuple[str, ...],
    config_file: Path | None,
    as_json: bool,
) -> None:
    """Create or update the customer's instance of the integration in FILE.

    Prints each webhook flow's URL (built from SPLICE_PUBLIC_URL) and each schedule.
    """
    from splice.definition import load_integration

    settings = _settings(ctx)
    runtime = _runtime(ctx, settings)
    try:
        integration = load_integration(file)
        deployment = runtime.instances.deploy(
            integration, customer=customer, assignments=assignments, config_file=config_file
        )
    except (SpliceError, OSError) as error:
        runtime.close()
        _fail(ctx, error)
    runtime.close()
    instance = deployment.instance
    if as_json:
        click.echo(
            json.dumps(
                {
                    "instance_id": instance.id,
                    "customer": instance.customer,
                    "integration": instance.integration_key,
                    "created": deployment.created,
                    "webhooks": deployment.webhooks,
                    "schedules": {
                        flow: {"cron": cron, "timezone": zone}
                        for flow, (cron, zone) in deployment.schedules.items()
                    },
                }
            )
        )
        return
    verb = "created" if deployment.created else "updated"
    click.echo(
        f"{verb} instance {instance.id} of {instance.integration_key} for {instance.customer}"
    )
    for flow, url in deployment.webhooks.items():
        click.echo(f"  webhook  {flow}: {url}")
    for flow, (cron, zone) in deployment.schedules.items():
        click.echo(f"  schedule {flow}: {cron} ({zone})")


@cli.group()
def instances() -> None:
    """List, show, disable and enable deployed instances."""


@instances.command("list")
@click.option("--customer", help="Only this customer's instances.")
@click.option("--integration", help="Only instances of this integration key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_context
def list_instances(
    ctx: click.Context, customer: str | None, integration: str | None, as_json: bool
) -> None:
    """List instances: id, customer, integration, version and whether enabled."""
    from splice.api.app import instance_json

    runtime = _runtime(ctx, _settings(ctx))
    try:
        found = runtime.instances.find(customer=customer, integration=integration)
        for instance in found:
            if as_json:
                click.echo(json.dumps(instance_json(runtime, instance)))
            else:
                state = "enabled" if instance.enabled else "disabled"
                click.echo(
                    f"{instance.id}  {instance.customer}/{instance.integration_key}  "
                    f"{instance.integration_version or '-'}  {state}"
                )
    except SpliceError as error:
        _fail(ctx, error)  # exits, and the finally block closes the runtime
    finally:
        runtime.close()


@instances.command("show")
@click.argument("reference")
@click.pass_context
def show_instance(ctx: click.Context, reference: str) -> None:
    """Print an instance with its webhook URLs, schedules and flows as JSON.

    REFERENCE is an instance id, a unique prefix of one, or CUSTOMER/INTEGRATION.
    """
    from splice.api.app import instance_json

    runtime = _runtime(ctx, _settings(ctx))
    try:
        instance = runtime.instances.require(reference)
        click.echo(json.dumps(instance_json(runtime, instance, details=True), indent=2))
    except SpliceError as error:
        runtime.close()
        _fail(ctx, error)
    runtime.close()


def _set_enabled(ctx: click.Context, reference: str, enabled: bool) -> None:
    """Enable or disable the instance and print what changed."""
    runtime = _runtime(ctx, _settings(ctx))
    try:
        instance = runtime.instances.require(reference)
        runtime.instances.set_enabled(instance.id, enabled)
    except SpliceError as error:
        runtime.close()
        _fail(ctx, error)
    runtime.close()
    click.echo(f"{'enabled' if enabled else 'disabled'} instance {instance.id}")


@instances.command("disable")
@click.argument("reference")
@click.pass_context
def disable_instance(ctx: click.Context, reference: str) -> None:
    """Stop the instance's webhooks and schedules from starting executions."""
    _set_enabled(ctx, reference, False)


@instances.command("enable")
@click.argument("reference")
@click.pass_context
def enable_instance(ctx: click.Context, reference: str) -> None:
    """Let the instance's webhooks and schedules start executions again."""
    _set_enabled(ctx, reference, True)


@executions.command("start")
@click.argument("reference")
@click.argument("flow")
@click.option(
    "--input",
    "input_file",
    help="Read the trigger's body from this JSON file (- for standard input).",
)
@click.pass_context
def start_execution(ctx: click.Context, reference: str, flow: str, input_file: str | None) -> None:
    """Queue an execution of FLOW of an instance and print its id; a worker runs it."""
    from splice.service.control import start_execution as start

    runtime = _runtime(ctx, _settings(ctx))
    try:
        accepted = start(
            runtime.instances, runtime.intake, reference, flow, _read_input(input_file)
        )
    except SpliceError as error:
        runtime.close()
        _fail(ctx, error)
    runtime.close()
    click.echo(accepted.execution_id)


@executions.command("cancel")
@click.argument("execution_id")
@click.pass_context
def cancel_execution(ctx: click.Context, execution_id: str) -> None:
    """Cancel an execution: at once when queued, by its worker when running."""
    from splice.service.control import cancel_execution as cancel

    runtime = _runtime(ctx, _settings(ctx))
    try:
        record = runtime.store.get_execution(execution_id)
        if record is None:
            from splice.cli.main import _unknown_execution

            raise _unknown_execution(execution_id)
        status = cancel(runtime.store, record.id)
    except SpliceError as error:
        runtime.close()
        _fail(ctx, error)
    runtime.close()
    click.echo(f"{status} {record.id}")


if sys.platform == "win32":  # pragma: no cover
    raise ImportError("the service commands need a POSIX system")
