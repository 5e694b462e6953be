"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Every file the classifier writes into a shared place (model caches, feature caches, artifacts)
goes through here: the content is written to a temporary file beside the target and renamed onto
it (``os.replace``, atomic on one file system); when writing fails, the temporary file is removed
and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yields a temporary path in ``target``'s folder (``.<name>.<random>.tmp``, created empty)
    for the caller to write; when the block ends without an exception the file replaces
    ``target``, else it is removed. ``fsync``: flush the file to disk before the rename."""
    destination = Path(target)
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        yield Path(temporary)
        if fsync:
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_atomically(target: str | os.PathLike[str], content: bytes | str, *, fsync: bool = False) -> Path:
    """Writes ``content`` (``str`` as UTF-8) to ``target`` through ``atomic_path``; returns ``target``."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_path(target, fsync=fsync) as temporary:
        temporary.write_bytes(data)
    return Path(target)
