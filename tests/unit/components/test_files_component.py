"""Tests of files.list, files.read and files.write on a temporary folder."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from splice.sdk import ActionContext, ActionError
from splice.testing import invoke_action, make_context


@pytest.fixture
def context(tmp_path: Path) -> ActionContext:
    """A context whose working directory is an empty temporary folder."""
    working_dir = tmp_path / "integration"
    working_dir.mkdir()
    return make_context(scratch_dir=tmp_path / "scratch", working_dir=working_dir)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A folder with awkward file names and a sub-folder."""
    folder = tmp_path / "inbox"
    (folder / "archive").mkdir(parents=True)
    (folder / "b invoice 2024.xml").write_bytes(b"<a/>")
    (folder / "A-UPPER.XML").write_bytes(b"<b/>")
    (folder / "čeština ünïcødé.xml").write_bytes(b"<c/>")
    (folder / "notes.txt").write_bytes(b"text")
    (folder / "archive" / "old.xml").write_bytes(b"<old/>")
    return folder


def names_of(listing: dict[str, Any]) -> list[str]:
    return [entry["name"] for entry in listing["files"]]


def test_list_pattern_ignores_case(inbox: Path) -> None:
    """*.xml matches .XML, names with spaces and non-ASCII names, sorted by name."""
    listing = invoke_action("files.list", path=str(inbox), pattern="*.xml")
    expected = ["A-UPPER.XML", "b invoice 2024.xml", "čeština ünïcødé.xml"]
    assert expected == names_of(listing)
    assert 3 == listing["count"]


def test_list_case_sensitive(inbox: Path) -> None:
    """With case_sensitive, *.xml leaves out .XML."""
    listing = invoke_action("files.list", path=str(inbox), pattern="*.xml", case_sensitive=True)
    assert ["b invoice 2024.xml", "čeština ünïcødé.xml"] == names_of(listing)


def test_list_default_pattern(inbox: Path) -> None:
    """The default pattern lists every file but not sub-folders."""
    listing = invoke_action("files.list", path=str(inbox))
    assert 4 == listing["count"]


def test_list_recursive(inbox: Path) -> None:
    """recursive includes files of sub-folders."""
    listing = invoke_action("files.list", path=str(inbox), pattern="old*", recursive=True)
    assert [str(inbox / "archive" / "old.xml")] == [entry["path"] for entry in listing["files"]]


def test_list_entry_fields(inbox: Path) -> None:
    """Each entry has the absolute path, name, size and UTC modification time."""
    file = inbox / "notes.txt"
    os.utime(file, (1_700_000_000, 1_700_000_000))
    listing = invoke_action("files.list", path=str(inbox), pattern="notes.txt")
    expected = {
        "path": str(file),
        "name": "notes.txt",
        "size": 4,
        "modified": "2023-11-14T22:13:20+00:00",
    }
    assert [expected] == listing["files"]


def test_list_relative_path(context: ActionContext) -> None:
    """A relative path is resolved against the integration folder."""
    assert context.working_dir is not None
    (context.working_dir / "invoices").mkdir()
    (context.working_dir / "invoices" / "one.xml").write_bytes(b"<a/>")
    listing = invoke_action("files.list", path="invoices", context=context)
    assert [str(context.working_dir / "invoices" / "one.xml")] == [
        entry["path"] for entry in listing["files"]
    ]


def test_list_missing_folder(tmp_path: Path) -> None:
    """A missing folder fails with its path."""
    missing = tmp_path / "no such folder"
    with pytest.raises(ActionError) as raised:
        invoke_action("files.list", path=str(missing))
    assert f"folder {missing} not found" in str(raised.value)
    assert raised.value.retryable is False


def test_list_file_not_folder(inbox: Path) -> None:
    """A file given as the folder fails with a message saying so."""
    with pytest.raises(ActionError) as raised:
        invoke_action("files.list", path=str(inbox / "notes.txt"))
    assert "is not a folder" in str(raised.value)


def test_read_bytes(inbox: Path) -> None:
    """files.read returns bytes by default."""
    assert b"<c/>" == invoke_action("files.read", path=str(inbox / "čeština ünïcødé.xml"))


def test_read_text_drops_bom(tmp_path: Path) -> None:
    """In text mode a UTF-8 byte order mark is dropped."""
    file = tmp_path / "bom.txt"
    file.write_bytes("\ufeffZoë".encode())
    assert "Zoë" == invoke_action("files.read", path=str(file), mode="text")


def test_read_text_encoding(tmp_path: Path) -> None:
    """The encoding input decodes text in other encodings."""
    file = tmp_path / "latin.txt"
    file.write_bytes("Größe".encode("iso-8859-1"))
    assert "Größe" == invoke_action(
        "files.read", path=str(file), mode="text", encoding="iso-8859-1"
    )


def test_read_text_invalid(tmp_path: Path) -> None:
    """Text that does not decode fails with the file name and offset."""
    file = tmp_path / "latin.txt"
    file.write_bytes("Größe".encode("iso-8859-1"))
    with pytest.raises(ActionError) as raised:
        invoke_action("files.read", path=str(file), mode="text")
    assert f"{file} is not valid utf-8: invalid byte at offset 2" in str(raised.value)


def test_read_missing_file(tmp_path: Path) -> None:
    """A missing file fails with its path."""
    missing = tmp_path / "missing.xml"
    with pytest.raises(ActionError) as raised:
        invoke_action("files.read", path=str(missing))
    assert f"file {missing} not found" in str(raised.value)


def test_write_text(tmp_path: Path) -> None:
    """files.write stores text as UTF-8 and returns the path and size."""
    target = tmp_path / "out" / "deep" / "résumé.txt"
    result = invoke_action("files.write", path=str(target), content="Zoë")
    assert {"path": str(target), "size": 4} == result
    assert "Zoë".encode() == target.read_bytes()


def test_write_leaves_no_temporary(tmp_path: Path) -> None:
    """Only the target file remains in the folder after a write."""
    invoke_action("files.write", path=str(tmp_path / "a.bin"), content=b"\x00\x01")
    assert ["a.bin"] == sorted(entry.name for entry in tmp_path.iterdir())


def test_write_overwrites(tmp_path: Path) -> None:
    """By default an existing file is replaced."""
    target = tmp_path / "a.txt"
    target.write_text("old")
    invoke_action("files.write", path=str(target), content="new")
    assert "new" == target.read_text()


def test_write_keeps_existing(tmp_path: Path) -> None:
    """With overwrite false an existing file is kept and the step fails."""
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(ActionError) as raised:
        invoke_action("files.write", path=str(target), content="new", overwrite=False)
    assert f"file {target} already exists" in str(raised.value)
    assert "old" == target.read_text()
    assert ["a.txt"] == sorted(entry.name for entry in tmp_path.iterdir())


def test_write_new_without_overwrite(tmp_path: Path) -> None:
    """With overwrite false a new file is still written."""
    target = tmp_path / "new.txt"
    invoke_action("files.write", path=str(target), content="x", overwrite=False)
    assert "x" == target.read_text()


def test_write_missing_folder(tmp_path: Path) -> None:
    """With make_dirs false a missing folder fails with its path."""
    target = tmp_path / "missing" / "a.txt"
    with pytest.raises(ActionError) as raised:
        invoke_action("files.write", path=str(target), content="x", make_dirs=False)
    assert f"folder {target.parent} not found" in str(raised.value)


def test_write_permissions_follow_umask(tmp_path: Path) -> None:
    """A new file gets the permissions the umask allows, not a temporary file's 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "a.txt"
    invoke_action("files.write", path=str(target), content="x")
    assert oct(0o666 & ~umask) == oct(target.stat().st_mode & 0o777)


def test_write_encoding(tmp_path: Path) -> None:
    """String content is encoded with the encoding input."""
    target = tmp_path / "latin.txt"
    invoke_action("files.write", path=str(target), content="Größe", encoding="iso-8859-1")
    assert "Größe".encode("iso-8859-1") == target.read_bytes()


def test_write_then_list_modified(tmp_path: Path) -> None:
    """A written file is listed with a modification time close to now."""
    invoke_action("files.write", path=str(tmp_path / "a.txt"), content="x")
    listing = invoke_action("files.list", path=str(tmp_path))
    modified = datetime.fromisoformat(listing["files"][0]["modified"])
    assert UTC == modified.tzinfo
    assert abs((datetime.now(UTC) - modified).total_seconds()) < 60
