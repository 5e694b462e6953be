"""PostgreSQL binary COPY for the bulk paths, on the connection Django holds (psycopg 3).

Head-only reclassification reads 4.6 KB of cached backbone outputs and writes one suggestion per
photo; at tens of thousands of photos a second, building a Python object per row costs more than
PostgreSQL's own work. So rows go out as one binary COPY whose fixed-width layout numpy reads in
place, and come in as one binary COPY into a temporary staging table followed by a single
`INSERT ... SELECT ... ON CONFLICT`. Format: https://www.postgresql.org/docs/current/sql-copy.html
("Binary Format").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction

if TYPE_CHECKING:
    import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER_SIZE = len(_SIGNATURE) + 4 + 4  # flags, header extension length (0)
_TRAILER = b"\xff\xff"


def copy_out(query: str, params: Sequence[Any] = ()) -> bytearray:
    """The binary COPY output of `query` (a SELECT, `%s` placeholders bound client-side), in one
    buffer (a chunk's cached outputs are ~19 MB; it is returned as is, never copied again)."""
    import psycopg

    connection.ensure_connection()
    buffer = bytearray()
    with psycopg.ClientCursor(connection.connection) as cursor:
        statement = cursor.mogrify(query, params)
        with cursor.copy(f"COPY ({statement}) TO STDOUT (FORMAT BINARY)") as copy:
            for block in copy:
                buffer += block
    return buffer


def fixed_width_rows(data: bytes | bytearray, fields: Sequence[tuple[str, str, int]]) -> np.ndarray | None:
    """Reads a binary COPY output whose every row has the same field sizes, in place.

    `fields`: `(name, numpy dtype, count)` per column, e.g. `("image_id", ">i8", 1)` for a bigint
    (COPY sends integers big-endian) or `("embedding", "<f4", 1280)` for a bytea of 1280 float32.
    Returns a structured array (N,) viewing `data` (no copy), or None when `data` is not laid out
    like that (a NULL or a field of another size): the caller then reads it row by row.
    """
    import numpy as np

    layout: list[tuple[str, Any] | tuple[str, Any, Any]] = [("field_count", ">i2")]
    for name, dtype, count in fields:
        layout.append((f"{name}_size", ">i4"))
        layout.append((name, dtype) if count == 1 else (name, dtype, (count,)))
    row = np.dtype(layout)
    body = len(data) - _HEADER_SIZE - len(_TRAILER)
    if body < 0 or body % row.itemsize:
        return None
    if not data.startswith(_SIGNATURE) or not data.endswith(_TRAILER):
        return None
    if int.from_bytes(data[len(_SIGNATURE) + 4 : _HEADER_SIZE], "big") != 0:
        return None
    rows = np.frombuffer(data, dtype=row, count=body // row.itemsize, offset=_HEADER_SIZE)
    if len(rows) and (rows["field_count"] != len(fields)).any():
        return None
    for name, dtype, count in fields:
        if len(rows) and (rows[f"{name}_size"] != np.dtype(dtype).itemsize * count).any():
            return None
    return rows


@contextlib.contextmanager
def commit_without_waiting() -> Iterator[None]:
    """A transaction whose commit does not wait for its WAL to reach the disk.

    For bulk writes that later bookkeeping depends on: the next synchronous commit on the server
    (a bulk chunk marked done) flushes this one's WAL first, so nothing is acknowledged before
    it is durable, while the worker stops waiting for an fsync per statement. Only a crash of
    the database server itself can lose such a commit, and then the chunk runs again.

    Inside a caller's transaction (an upload recording one photo, say) nothing changes: `SET
    LOCAL` would last until that transaction's end, so the caller's commit keeps its durability.
    """
    if connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def staged_upsert(
    *,
    staging: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]] | bytes,
    upsert: str,
    params: Sequence[Any] = (),
) -> None:
    """COPY `rows` (binary; values per row, or the rows already laid out as binary COPY rows,
    without header or trailer) into the temporary table `staging` (`columns`: name and PostgreSQL
    type; created on first use in the session, emptied before each use), then run `upsert`, an
    `INSERT ... SELECT ... FROM <staging> ... ON CONFLICT ...`, in the same transaction, which
    commits without waiting for the disk (`commit_without_waiting`)."""
    import psycopg

    connection.ensure_connection()
    with commit_without_waiting(), psycopg.Cursor(connection.connection) as cursor:
        definition = ", ".join(f"{name} {kind}" for name, kind in columns)
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({definition})")
        cursor.execute(f"TRUNCATE {staging}")
        with cursor.copy(f"COPY {staging} FROM STDIN (FORMAT BINARY)") as copy:
            copy_write(copy, [kind for _, kind in columns], rows)
        cursor.execute(upsert, list(params))


def copy_write(copy: Any, types: Sequence[str], rows: Iterable[Sequence[Any]] | bytes) -> None:
    """Write `rows` to a binary `COPY ... FROM STDIN`: values per row (of PostgreSQL `types`),
    or bytes of rows already laid out, framed here by the header and the trailer."""
    if isinstance(rows, bytes):
        copy.write(_SIGNATURE + bytes(8) + rows + _TRAILER)
        return
    copy.set_types(list(types))
    for values in rows:
        copy.write_row(values)
