"""Atomic writes: the target holds the old content or the new, and no temporary file is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.atomic import atomic_path, write_atomically


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "head.json"
    target.write_text("old", encoding="utf-8")

    assert write_atomically(target, "new ✓") == target

    assert target.read_text(encoding="utf-8") == "new ✓"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    # given an existing file
    target = tmp_path / "features.npz"
    target.write_bytes(b"old")

    # when a writer fails halfway
    with pytest.raises(RuntimeError), atomic_path(target, fsync=True) as temporary:
        temporary.write_bytes(b"partial")
        raise RuntimeError("disk full")

    # then the old content stays and the temporary file is gone
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npz"]
