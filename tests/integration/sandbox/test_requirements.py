"""Customer packages: installed once per requirement set, read-only, outside the platform."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

from splice.errors import DefinitionError
from splice.local import LocalRun
from splice.settings import Settings

DEFINITION = """
key: greeter
name: Greeter
requirements: ["{requirement}"]
flows:
  main:
    trigger: {{type: manual}}
    steps:
      - id: greet
        action: code.run
        inputs:
          source: |
            import greetlib
            def run(context):
                try:
                    open(greetlib.__file__, "a").write("# changed")
                    writable = True
                except OSError:
                    writable = False
                return {{"greeting": greetlib.greet("you"), "writable": writable}}
"""


def _wheel(folder: Path, name: str = "greetlib", version: str = "1.0") -> None:
    """Write a minimal pure-Python wheel, so the test needs no package index."""
    files = {
        f"{name}/__init__.py": "def greet(who):\n    return f'hello {who} from greetlib'\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: splice-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            data = text.encode()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{name}-{version}.dist-info/RECORD,,")
        archive.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder)
    return folder


def _settings(tmp_path: Path, wheels: Path) -> Settings:
    return Settings.from_env(
        {
            "SPLICE_DATA_DIR": str(tmp_path / "data"),
            "SPLICE_PIP_ARGS": f"--no-index --find-links {wheels}",
        }
    )


def test_requirement_importable_read_only(tmp_path: Path, wheels: Path) -> None:
    """The customer code imports its requirement, and cannot change the installed files."""
    definition = tmp_path / "greeter.yaml"
    definition.write_text(DEFINITION.format(requirement="greetlib==1.0"))
    with LocalRun.open(_settings(tmp_path, wheels)) as local:
        outcome = local.run(definition)
    assert "succeeded" == outcome.status
    assert "hello you from greetlib" == outcome.result["greeting"]
    assert False is outcome.result["writable"]


def test_requirement_not_in_platform(tmp_path: Path, wheels: Path) -> None:
    """The platform's own environment does not get the package."""
    definition = tmp_path / "greeter.yaml"
    definition.write_text(DEFINITION.format(requirement="greetlib==1.0"))
    with LocalRun.open(_settings(tmp_path, wheels)) as local:
        local.run(definition)
    assert importlib.util.find_spec("greetlib") is None


def test_requirement_installed_once(tmp_path: Path, wheels: Path) -> None:
    """A second execution reuses the installed folder instead of installing again."""
    definition = tmp_path / "greeter.yaml"
    definition.write_text(DEFINITION.format(requirement="greetlib==1.0"))
    settings = _settings(tmp_path, wheels)
    with LocalRun.open(settings) as local:
        local.run(definition)
        assert settings.packages_dir is not None
        installed = [entry for entry in settings.packages_dir.iterdir() if entry.is_dir()]
        first = installed[0].stat().st_mtime_ns
        (wheels / "greetlib-1.0-py3-none-any.whl").unlink()  # a second install would fail
        outcome = local.run(definition)
    assert 1 == len(installed)
    assert "succeeded" == outcome.status
    assert first == installed[0].stat().st_mtime_ns


def test_unknown_requirement_error(tmp_path: Path, wheels: Path) -> None:
    """A requirement pip cannot find fails with a definition error naming it."""
    definition = tmp_path / "greeter.yaml"
    definition.write_text(DEFINITION.format(requirement="nosuchpackage==9.9"))
    with (
        LocalRun.open(_settings(tmp_path, wheels)) as local,
        pytest.raises(DefinitionError) as error,
    ):
        local.run(definition)
    assert "nosuchpackage==9.9" in str(error.value)


def test_invalid_requirement_text(tmp_path: Path, wheels: Path) -> None:
    """A requirement that is not valid pip syntax is rejected when the definition loads."""
    definition = tmp_path / "greeter.yaml"
    definition.write_text(DEFINITION.format(requirement="greetlib >>> 1"))
    with (
        LocalRun.open(_settings(tmp_path, wheels)) as local,
        pytest.raises(DefinitionError) as error,
    ):
        local.run(definition)
    assert "requirement 'greetlib >>> 1' is invalid" in str(error.value)
