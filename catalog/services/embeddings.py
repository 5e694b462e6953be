"""The embedding cache: backbone outputs per photo and backbone version, so that a new head
(retraining, bulk reclassification) needs no decode and no CNN.

One reader (`embeddings_read`) and one writer (`embeddings_write`) for every path: an upload
caches what its classification computed, a bulk chunk reads what it can score by the head alone
and caches what went through the CNN, training caches what it had to embed. Rows are
`(image id, embedding float32 LE bytes (1280,), logits float32 LE bytes (1000,))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connection

from catalog.models import ImageEmbedding, ListingImage

if TYPE_CHECKING:
    import numpy as np

EMBEDDING_DIM = 1280
LOGITS_DIM = 1000

#: `(image id, embedding float32 LE bytes, logits float32 LE bytes)`.
EmbeddingRow = tuple[int, bytes, bytes]


@dataclass(frozen=True)
class CachedOutputs:
    """Cached backbone outputs, rows aligned: `image_ids` (N,), `embeddings` float32 (N, 1280),
    `logits` float32 (N, 1000), in primary-key order of the photos."""

    image_ids: list[int]
    embeddings: np.ndarray
    logits: np.ndarray


def embeddings_read(*, image_ids: Sequence[int], backbone_version: str) -> CachedOutputs:
    """Cached backbone outputs of the photos of `image_ids` that have them for `backbone_version`.

    A row whose arrays are not of the sizes above (damaged) is left out, so the photo is embedded
    again. One binary COPY, read in place by numpy: no Python object per row (see
    `catalog.pgcopy`); the bulk path's head-only speed depends on it.
    """
    import numpy as np

    from catalog.pgcopy import copy_out, fixed_width_rows

    empty = CachedOutputs([], np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros((0, LOGITS_DIM), np.float32))
    if not image_ids:
        return empty
    data = copy_out(
        f"SELECT image_id, embedding, logits FROM {ImageEmbedding._meta.db_table} "
        "WHERE backbone_version = %s AND image_id = ANY(%s::bigint[]) "
        "AND octet_length(embedding) = %s AND octet_length(logits) = %s ORDER BY image_id",
        [backbone_version, list(image_ids), 4 * EMBEDDING_DIM, 4 * LOGITS_DIM],
    )
    rows = fixed_width_rows(
        data, [("image_id", ">i8", 1), ("embedding", "<f4", EMBEDDING_DIM), ("logits", "<f4", LOGITS_DIM)]
    )
    if rows is None:  # cannot happen with the sizes filtered above; never misread a row
        raise ValueError("Unexpected layout of the embedding cache's COPY output.")
    if not len(rows):
        return empty
    return CachedOutputs(rows["image_id"].tolist(), rows["embedding"], rows["logits"])


def embeddings_write(*, backbone_version: str, rows: Sequence[EmbeddingRow]) -> None:
    """Cache backbone outputs, replacing a photo's earlier row for `backbone_version` (e.g. a
    damaged one); photos deleted meanwhile are skipped.

    One upsert with the arrays bound in binary (a `bulk_create` quoted ~9 KB of bytea per photo
    into hex SQL text, which cost the CNN path a few percent of its throughput). On its own it
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
            "(image_id, backbone_version, embedding, logits, created_at) "
            "SELECT v.image_id, %s, v.embedding, v.logits, now() "
            "FROM unnest(%b::bigint[], %b::bytea[], %b::bytea[]) AS v(image_id, embedding, logits) "
            f"JOIN {ListingImage._meta.db_table} AS photo ON photo.id = v.image_id "
            "ON CONFLICT (image_id, backbone_version) DO UPDATE SET "
            "embedding = EXCLUDED.embedding, logits = EXCLUDED.logits",
            [
                backbone_version,
                [image_id for image_id, _, _ in rows],
                [embedding for _, embedding, _ in rows],
                [logits for _, _, logits in rows],
            ],
        )
