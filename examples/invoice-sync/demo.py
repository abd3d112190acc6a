"""Run the invoice-sync integration once against the example accounting API.

Usage, from anywhere::

    python examples/invoice-sync/demo.py [--inbox DIR]

The script starts ``accounting_server.py`` on a free port of 127.0.0.1 with a random
API key, then runs, from the repository root::

    splice run examples/invoice-sync/integration.yaml --config inbox=DIR \\
        --config accounting_url=URL --config accounting.api_key=KEY

It passes splice's stderr through, prints the execution's JSON result and the number
of records that the server stored, stops the server and exits with splice's exit code.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent
REPOSITORY_ROOT = EXAMPLE_DIR.parents[1]
DEFAULT_INBOX = EXAMPLE_DIR / "invoices"
SERVER_START_TIMEOUT = 10.0  # seconds to wait for the server's "listening on" line


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    inbox = _inbox_argument(arguments.inbox)
    api_key = secrets.token_urlsafe(24)
    server = start_server(api_key)
    try:
        url = read_server_url(server)
        exit_code = run_integration(inbox, url, api_key)
        print(f"the accounting API stored {count_stored(url, api_key)} records")
    finally:
        stop_server(server)
    return exit_code


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the invoice-sync demo end to end.")
    parser.add_argument(
        "--inbox",
        help="folder of UBL files to read (default: examples/invoice-sync/invoices)",
    )
    return parser.parse_args(argv)


def _inbox_argument(inbox: str | None) -> str:
    """Return the inbox as an absolute path, a relative ``--inbox`` being taken from the cwd.

    files.list would take a relative path from the integration's folder instead.
    """
    if inbox is None:
        return str(DEFAULT_INBOX)
    path = Path(inbox).resolve()
    if not path.is_dir():
        raise SystemExit(f"demo.py: --inbox {inbox!r} is not a folder; give a folder of .xml files")
    return str(path)


def start_server(api_key: str) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        str(EXAMPLE_DIR / "accounting_server.py"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        f"--api-key={api_key}",  # one argument, since a random key may start with "-"
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def read_server_url(server: subprocess.Popen[str]) -> str:
    """Wait for the server's first stdout line and return the URL it names."""
    assert server.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(server.stdout.readline()), daemon=True)
    reader.start()
    reader.join(SERVER_START_TIMEOUT)
    line = lines[0].strip() if lines else ""
    if not line.startswith("listening on "):
        raise SystemExit(
            f"demo.py: the accounting server did not report its address within "
            f"{SERVER_START_TIMEOUT:.0f} s (first line: {line!r}); see its stderr above"
        )
    return line.removeprefix("listening on ")


def run_integration(inbox: str, url: str, api_key: str) -> int:
    """Run ``splice run`` as a subprocess, print its JSON result and return its exit code."""
    splice = Path(sys.executable).parent / "splice"
    if not splice.exists():
        raise SystemExit(f"demo.py: {splice} not found; install Splice into this environment first")
    command = [
        str(splice),
        "run",
        "examples/invoice-sync/integration.yaml",
        "--flow",
        "sync",
        "--config",
        f"inbox={inbox}",
        "--config",
        f"accounting_url={url}",
        "--config",
        f"accounting.api_key={api_key}",
    ]
    # stderr is inherited, so splice's progress and logs appear as they happen.
    completed = subprocess.run(command, cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE, text=True)
    print(_pretty_json(completed.stdout))
    return completed.returncode


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text.rstrip("\n")


def count_stored(url: str, api_key: str) -> int:
    request = urllib.request.Request(f"{url}/invoices", headers={"X-API-Key": api_key})
    with urllib.request.urlopen(request, timeout=10) as response:
        return len(json.load(response))


def stop_server(server: subprocess.Popen[str]) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if server.stdout is not None:
        server.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
