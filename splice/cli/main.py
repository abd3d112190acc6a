"""``splice``: run and validate integrations, inspect executions and their logs.

Exit codes: 0 succeeded, 1 the execution failed, 2 invalid command line (an unknown
option, execution id or flow, a missing --input file), 3 invalid definition or config
value, 4 the store or sandbox is broken.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from splice.errors import (
    ConfigError,
    DefinitionError,
    OperatorError,
    RequestError,
    SpliceError,
    UsageError,
)

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_OPERATOR = 4

# Width of tables written to a file or a pipe, where Rich would otherwise assume 80 columns
# and cut ids; COLUMNS, when set, still wins.
PIPE_WIDTH = 160


def _console(*, stderr: bool = False) -> Console:
    """Return a console for standard output or standard error, wide when it is not a terminal."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console


stderr = _console(stderr=True)

RUN_EPILOG = """
\b
Examples:
  splice run examples/invoice-sync/integration.yaml \\
      --config inbox=examples/invoice-sync/invoices \\
      --config accounting_url=http://127.0.0.1:8700 \\
      --config accounting.api_key=KEY
  SPLICE_CONFIG_ACCOUNTING__API_KEY=KEY splice run integration.yaml --config-file prod.yaml
  echo '{"id": 7}' | splice run integration.yaml --input -
"""


class _Context:
    def __init__(self, verbose: int) -> None:
        self.verbose = verbose


def _fail(ctx: click.Context, error: BaseException) -> None:
    """Print an error the way the CLI promises (cause, then the traceback with -v) and exit."""
    state = ctx.find_object(_Context)
    verbose = state.verbose if state is not None else 0
    if isinstance(error, UsageError | RequestError):
        code = EXIT_USAGE
    elif isinstance(error, DefinitionError | ConfigError):
        code = EXIT_INVALID
    elif isinstance(error, OperatorError):
        code = EXIT_OPERATOR
    else:
        code = EXIT_FAILED
    stderr.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    cause = error.__cause__
    while cause is not None:
        stderr.print(f"  caused by: {type(cause).__name__}: {cause}", markup=False, soft_wrap=True)
        cause = cause.__cause__
    if verbose:
        import traceback

        stderr.print("".join(traceback.format_exception(error)), markup=False)
    ctx.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-v", "--verbose", count=True, help="Show tracebacks and debug logs (repeat for more)."
)
@click.version_option(package_name="splice")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Splice runs integrations: fetch, transform with your Python, deliver, record every step.

    Settings come from SPLICE_* environment variables; see docs/settings.md.
    """
    ctx.obj = _Context(verbose)
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@cli.command(epilog=RUN_EPILOG)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--flow", help="Flow to run; needed when the integration has several.")
@click.option(
    "--config",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a config value; a connection field as NAME.FIELD=VALUE. Repeatable. "
    "Environment: SPLICE_CONFIG_NAME, SPLICE_CONFIG_NAME__FIELD.",
)
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML or JSON mapping of config values (connections as nested mappings).",
)
@click.option(
    "--input",
    "input_file",
    metavar="FILE|-",
    help="JSON given to the flow as trigger.body ('-' reads standard input); "
    "a file that is not JSON is passed as text.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the result, no timeline.")
@click.pass_context
def run(
    ctx: click.Context,
    file: Path,
    flow: str | None,
    assignments: tuple[str, ...],
    config_file: Path | None,
    input_file: str | None,
    quiet: bool,
) -> None:
    """Run a flow of the integration in FILE locally and print its result as JSON.

    The result goes to standard output; progress and the step timeline go to standard error.
    Exit code 0 means the execution succeeded, 1 that it failed, 2 that a command-line value
    (--flow, --input) is invalid, 3 that the definition or a config value is invalid, 4 that
    the record store or the sandbox is broken.
    """
    from splice.sandbox.forkserver import ForkServerSandbox

    try:
        # Spawned first, so the template's imports overlap with this process's own.
        sandbox = ForkServerSandbox()
    except SpliceError as error:  # an invalid SPLICE_* setting
        _fail(ctx, error)
        return
    from splice.local import LocalRun

    try:
        trigger = {"type": "manual", "body": _read_input(input_file)}
        with LocalRun.open(sandbox=sandbox) as local:
            outcome = local.run(
                file,
                flow=flow,
                assignments=assignments,
                config_file=config_file,
                trigger=trigger,
                quiet=quiet,
                console=stderr,
            )
    except (SpliceError, OSError) as error:
        _fail(ctx, error)
        return
    finally:
        sandbox.close()
    from splice.cli.render import failure_line, to_json

    click.echo(to_json(outcome.result))
    if quiet and outcome.status != "succeeded":
        stderr.print(failure_line(outcome), soft_wrap=True)
    ctx.exit(EXIT_SUCCEEDED if outcome.status == "succeeded" else EXIT_FAILED)


def _read_input(input_file: str | None) -> Any:
    if input_file is None:
        return None
    if input_file == "-":
        text = sys.stdin.read()
    else:
        path = Path(input_file)
        if not path.is_file():
            raise UsageError(
                "file not found",
                option="--input",
                value=input_file,
                fix="give the path of a readable JSON file, or - for standard input",
            )
        text = path.read_text(encoding="utf-8-sig")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def validate(ctx: click.Context, file: Path) -> None:
    """Check the integration in FILE without running it (exit code 3 when invalid)."""
    from splice.cli.render import plural
    from splice.definition import load_integration

    try:
        integration = load_integration(file)
    except SpliceError as error:
        _fail(ctx, error)
        return
    flows = ", ".join(
        f"{name} ({plural(len(flow.steps), 'step')})" for name, flow in integration.flows.items()
    )
    title = " ".join(filter(None, [integration.key, integration.version]))
    stderr.print(f"[green]valid[/]: {escape(title)} — flows: {escape(flows)}")


@cli.group()
def executions() -> None:
    """List and inspect recorded executions."""


@executions.command("list")
@click.option(
    "--status",
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]),
)
@click.option("--integration", help="Only executions of this integration key.")
@click.option("--flow", help="Only executions of this flow.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_context
def list_executions(
    ctx: click.Context,
    status: str | None,
    integration: str | None,
    flow: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List recent executions, newest first."""
    from splice.cli.render import execution_table
    from splice.local import open_store

    try:
        with open_store() as store:
            records = store.list_executions(
                status=status, integration=integration, flow=flow, limit=limit
            )
    except SpliceError as error:
        _fail(ctx, error)
        return
    if as_json:
        for record in records:
            click.echo(json.dumps(_execution_json(record), default=str))
        return
    _console().print(execution_table(records))


def _unknown_execution(execution_id: str) -> UsageError:
    return UsageError(
        "no execution has this id, or the prefix matches several executions",
        option="EXECUTION_ID",
        value=execution_id,
        # Ids start with their creation time, so executions of the same minute share the
        # first 8 characters.
        fix="give the whole id, or more of its characters; list ids with `splice executions list`",
    )


def _execution_json(record: Any) -> dict[str, Any]:
    """Return the record's fields for --json, timestamps in ISO 8601 with their UTC offset."""
    from splice.cli.render import utc_iso

    fields = (
        "id",
        "integration_key",
        "integration_version",
        "flow",
        "trigger_type",
        "status",
        "created_at",
        "started_at",
        "ended_at",
        "error_type",
        "error_message",
        "failed_step",
        "step_runs",
        "continued_failures",
    )
    data = {name: getattr(record, name) for name in fields}
    for name in ("created_at", "started_at", "ended_at"):
        data[name] = utc_iso(data[name])
    return data


@executions.command("show")
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record and step runs as JSON.")
@click.pass_context
def show_execution(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """Show one execution: status, timeline of step runs with sizes, and every failure."""
    from splice.cli.render import utc_iso
    from splice.local import open_store

    try:
        with open_store() as store:
            record = store.get_execution(execution_id)
            if record is None:
                raise _unknown_execution(execution_id)
            runs = store.step_runs(record.id)
    except SpliceError as error:
        _fail(ctx, error)
        return
    if as_json:
        data = _execution_json(record)
        data["step_runs_detail"] = [
            {
                key: getattr(run, key)
                for key in (
                    "path",
                    "kind",
                    "action",
                    "status",
                    "attempt",
                    "started_at",
                    "ended_at",
                    "input_size",
                    "output_size",
                    "output_blob",
                    "error_type",
                    "error_message",
                    "continued",
                )
            }
            for run in runs
        ]
        for detail in data["step_runs_detail"]:
            detail["started_at"] = utc_iso(detail["started_at"])
            detail["ended_at"] = utc_iso(detail["ended_at"])
        click.echo(json.dumps(data, default=str, indent=2))
        return
    _print_execution(record, runs)


def _print_execution(record: Any, runs: list[Any]) -> None:
    from splice.cli.render import (
        describe_failure,
        failed_runs,
        format_duration,
        plural,
        timeline_table,
        utc_text,
    )

    console = _console()
    console.print(f"[bold]execution[/] {escape(record.id)}")
    title = " ".join(filter(None, [record.integration_key, record.integration_version]))
    console.print(
        f"  integration {title} · flow {record.flow} · trigger {record.trigger_type}",
        markup=False,
    )
    console.print(
        f"  status [bold]{escape(record.status)}[/] · started {utc_text(record.started_at)}"
        f" · duration {format_duration(record.duration)}"
        f" · {plural(record.step_runs, 'step run')}"
        f" · {plural(record.continued_failures, 'continued failure')}"
    )
    if record.error_message:
        console.print(
            f"  [red]error[/] {escape(f'{record.error_type}: {record.error_message}')}",
            soft_wrap=True,
        )
    console.print(timeline_table(runs))
    failures = failed_runs(runs)
    if failures:
        console.print("[bold]failures[/]")
        for failure in failures:
            console.print("  " + describe_failure(failure), markup=False, soft_wrap=True)


@cli.command()
@click.argument("execution_id")
@click.option("--step", help="Only lines of step paths starting with this.")
@click.pass_context
def logs(ctx: click.Context, execution_id: str, step: str | None) -> None:
    """Print the log lines of an execution."""
    from splice.cli.render import utc_text
    from splice.local import open_store

    try:
        with open_store() as store:
            record = store.get_execution(execution_id)
            if record is None:
                raise _unknown_execution(execution_id)
            lines = store.logs(record.id)
    except SpliceError as error:
        _fail(ctx, error)
        return
    for line in lines:
        if step and not (line["step_path"] or "").startswith(step):
            continue
        stamp = utc_text(line["time"], fraction=True)
        click.echo(f"{stamp} {line['level']:<7} {line['step_path'] or '-'}: {line['message']}")


PROTECTION_HELP = {
    "pid-namespace": "needs Linux and root (or CAP_SYS_ADMIN)",
    "mount-namespace": "needs Linux and root (or CAP_SYS_ADMIN)",
    "ipc-namespace": "needs Linux and root (or CAP_SYS_ADMIN)",
    "uts-namespace": "needs Linux and root (or CAP_SYS_ADMIN)",
    "private-root": "needs the mount namespace",
    "unprivileged-user": "needs root, to switch to SPLICE_SANDBOX_UID",
    "no-new-privileges": "needs Linux",
    "seccomp": "needs Linux on x86_64 or aarch64",
    "landlock": "needs Linux 5.13 or newer with Landlock enabled (lsm=landlock)",
    "rlimits": "always available",
    "cgroup-pids": "needs a writable pids cgroup (v2 delegated, or v1)",
    "cgroup-memory": "needs a writable memory cgroup (v2 delegated, or v1)",
}


@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check the installation: which sandbox protections are active on this host, and why not.

    Exit code 0 when every protection is active, 1 when some are missing (Splice still runs,
    unless SPLICE_SANDBOX_REQUIRE_ISOLATION is set), 4 when the sandbox cannot start.
    """
    from rich.table import Table
    from rich.text import Text

    from splice.sandbox.forkserver import ForkServerSandbox
    from splice.settings import Settings

    try:
        sandbox = ForkServerSandbox(Settings.from_env())
        try:
            sandbox.wait_ready()
        finally:
            sandbox.close()
    except SpliceError as error:
        _fail(ctx, error)
        return
    console = _console()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("protection", "status", "note"):
        table.add_column(column)
    for name in sandbox.protections["active"]:
        table.add_row(name, Text("active", style="green"), "")
    disabled = set(sandbox.settings.sandbox.disable)
    for name in sandbox.protections["missing"]:
        if name in disabled:
            table.add_row(name, Text("disabled", style="yellow"), "by SPLICE_SANDBOX_DISABLE")
        else:
            table.add_row(name, Text("missing", style="red"), PROTECTION_HELP[name])
    console.print(table)
    for key, value in sandbox.details.items():
        console.print(Text(f"{key}: {value}"))
    missing = sandbox.protections["missing"]
    if missing:
        console.print(Text(f"{len(missing)} protections missing; see docs/sandbox.md"))
    ctx.exit(1 if missing else 0)


@cli.command()
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown.")
def components(markdown: bool) -> None:
    """List the built-in components, their actions and inputs."""
    from splice.cli.reference import render_markdown
    from splice.components import builtin_components

    found = builtin_components().values()
    if markdown:
        click.echo(render_markdown(found), nl=False)
        return
    for component in found:
        click.echo(f"{component.name}: {component.description}")
        for action in component.actions.values():
            inputs = ", ".join(
                f"{name}{'*' if spec.required else ''}" for name, spec in action.inputs.items()
            )
            click.echo(f"  {action.qualified_name}({inputs}): {action.description}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="splice")


from splice.cli import service as _service  # noqa: E402, F401  (registers the service commands)
