"""The embedding cache: backbone outputs per photo and backbone version, so that a new head
(retraining, bulk reclassification) needs no decode and no CNN.

One reader (`embeddings_read`) and one writer (`embeddings_write`) for every path: an upload
caches what its classification computed, a bulk chunk reads what it can score by the head alone
and caches what went through the CNN, training caches what it had to embed. Rows are
`(image id, embedding (1280,), logits (1000,))` as arrays.

Stored layout (`ImageEmbedding.outputs`): float16 little-endian, the embedding then the logits,
4,560 bytes, kept in place in the row (`STORAGE PLAIN`, migration 0009) so a head-only job reads
it without TOAST lookups. The classifier rounds the outputs it scores to the same precision
(`classifier.outputs`), so scores computed from the cache equal those computed at upload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connection

from catalog.models import ImageEmbedding, ListingImage

if TYPE_CHECKING:  # numpy loads on first use: web processes never need it, and a worker's
    import numpy as np  # `workers` package must limit its BLAS threads before it loads

EMBEDDING_DIM = 1280
LOGITS_DIM = 1000
#: The stored element type (numpy's name for float16, little-endian) and a photo's stored size.
STORED_DTYPE = "<f2"
OUTPUTS_BYTES = (EMBEDDING_DIM + LOGITS_DIM) * 2

#: `(image id, embedding float (1280,), logits float (1000,))`.
EmbeddingRow = tuple[int, "np.ndarray", "np.ndarray"]


@dataclass(frozen=True)
class CachedOutputs:
    """Cached backbone outputs, rows aligned: `image_ids` (N,), `embeddings` (N, 1280) and
    `logits` (N, 1000) as stored, float16 (column views of one array: the scorer converts them
    once, as it needs), in primary-key order of the photos."""

    image_ids: list[int]
    embeddings: np.ndarray
    logits: np.ndarray


def outputs_pack(embedding: np.ndarray, logits: np.ndarray) -> bytes:
    """One photo's outputs in the stored layout (any float dtype in; values beyond float16's
    range are clipped to its largest, as the classifier does before scoring, see
    `classifier.outputs`). Raises `ValueError` for other sizes than (1280,) and (1000,)."""
    import numpy as np

    embedding, logits = np.ravel(embedding), np.ravel(logits)
    if embedding.shape != (EMBEDDING_DIM,) or logits.shape != (LOGITS_DIM,):
        raise ValueError(
            f"Expected an embedding of {EMBEDDING_DIM} values and {LOGITS_DIM} logits, "
            f"got {embedding.size} and {logits.size}."
        )
    largest = float(np.finfo(np.float16).max)
    return np.clip(np.concatenate([embedding, logits]), -largest, largest).astype(STORED_DTYPE).tobytes()


def outputs_unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(embeddings (N, 1280), logits (N, 1000))`, float16 views (no copy) of stored rows as
    float16 (N, 2280) (or of one row's bytes read with `np.frombuffer(data, STORED_DTYPE)`)."""
    import numpy as np

    values = np.atleast_2d(packed)
    return values[:, :EMBEDDING_DIM], values[:, EMBEDDING_DIM:]


def embeddings_read(*, image_ids: Sequence[int], backbone_version: str) -> CachedOutputs:
    """Cached backbone outputs of the photos of `image_ids` that have them for `backbone_version`.

    A row whose arrays are not of the sizes above (damaged) is left out, so the photo is embedded
    again. One binary COPY, read in place by numpy: no Python object per row (see
    `catalog.pgcopy`); the bulk path's head-only speed depends on it.
    """
    import numpy as np

    from catalog.pgcopy import copy_out, fixed_width_rows

    empty = CachedOutputs(
        [], np.zeros((0, EMBEDDING_DIM), STORED_DTYPE), np.zeros((0, LOGITS_DIM), STORED_DTYPE)
    )
    if not image_ids:
        return empty
    data = copy_out(
        f"SELECT image_id, outputs FROM {ImageEmbedding._meta.db_table} "
        "WHERE backbone_version = %s AND image_id = ANY(%s::bigint[]) AND octet_length(outputs) = %s "
        "ORDER BY image_id",
        [backbone_version, list(image_ids), OUTPUTS_BYTES],
    )
    rows = fixed_width_rows(
        data, [("image_id", ">i8", 1), ("outputs", STORED_DTYPE, EMBEDDING_DIM + LOGITS_DIM)]
    )
    if rows is None:  # cannot happen with the size filtered above; never misread a row
        raise ValueError("Unexpected layout of the embedding cache's COPY output.")
    if not len(rows):
        return empty
    embeddings, logits = outputs_unpack(rows["outputs"])
    return CachedOutputs(rows["image_id"].tolist(), embeddings, logits)


def embeddings_write(*, backbone_version: str, rows: Sequence[EmbeddingRow]) -> None:
    """Cache backbone outputs, replacing a photo's earlier row for `backbone_version` (e.g. a
    damaged one); photos deleted meanwhile are skipped. Raises `ValueError` for arrays of other
    sizes (`outputs_pack`).

    One upsert with the packed outputs bound in binary (a `bulk_create` quoted the bytea per
    photo into hex SQL text, which cost the CNN path a few percent of its throughput). On its own it
    commits without waiting for the disk (`catalog.pgcopy.commit_without_waiting`): a bulk
    chunk's end makes it durable; inside a caller's transaction it is part of that one.
    """
    import psycopg

    from catalog.pgcopy import commit_without_waiting

    if not rows:
        return
    connection.ensure_connection()
    with commit_without_waiting(), psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"INSERT INTO {ImageEmbedding._meta.db_table} "
            "(image_id, backbone_version, outputs, created_at) "
            "SELECT v.image_id, %s, v.outputs, now() "
            "FROM unnest(%b::bigint[], %b::bytea[]) AS v(image_id, outputs) "
            f"JOIN {ListingImage._meta.db_table} AS photo ON photo.id = v.image_id "
            "ON CONFLICT (image_id, backbone_version) DO UPDATE SET outputs = EXCLUDED.outputs",
            [
                backbone_version,
                [image_id for image_id, _, _ in rows],
                [outputs_pack(embedding, logits) for _, embedding, logits in rows],
            ],
        )
