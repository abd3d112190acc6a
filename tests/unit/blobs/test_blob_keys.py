"""Blob keys: the normalized relative paths every blob store accepts."""

from __future__ import annotations

import pytest

from splice.blobs.keys import check_key


@pytest.mark.parametrize(
    "key", ["a", "executions/0192/output-1.bin", "bodies/x.y.z", "a/.hidden", "a b/ü"]
)
def test_valid_key(key: str) -> None:
    """A relative path of plain names is returned unchanged."""
    assert key == check_key(key)


@pytest.mark.parametrize(
    "key", ["", ".", "..", "/a", "//a", "a/", "a//b", "./a", "a/./b", "a/../b", "..a/../b", "a\x00"]
)
def test_invalid_key(key: str) -> None:
    """An empty, absolute or unnormalized path raises ValueError naming the key."""
    with pytest.raises(ValueError, match=r"blob key .* is invalid"):
        check_key(key)


def test_invalid_key_type() -> None:
    """A key that is not a string raises ValueError too."""
    with pytest.raises(ValueError, match="non-empty string"):
        check_key(b"a")  # type: ignore[arg-type]


def test_key_prefix_wording() -> None:
    """The error names what the caller passed, such as a key prefix."""
    with pytest.raises(ValueError, match="key prefix 'a/' is invalid"):
        check_key("a/", label="key prefix")
