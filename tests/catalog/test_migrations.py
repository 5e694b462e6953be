"""Data migrations, run forward and back on rows written in the layout before them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import ListingImageFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_FLOAT16 = [("catalog", "0008_flow_merge_speed_embedding_lz4")]


def _migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.fixture
def latest() -> Iterator[list[tuple[str, str]]]:
    targets = MigrationExecutor(connection).loader.graph.leaf_nodes()
    yield targets
    _migrate(targets)  # whatever the test did, the next one finds the current schema


def test_cached_outputs_become_float16_in_place_and_come_back_as_float32(
    latest: list[tuple[str, str]],
) -> None:
    # given, before the float16 layout, a photo with cached float32 outputs and a damaged row
    intact, damaged = ListingImageFactory.create(), ListingImageFactory.create()
    _migrate(BEFORE_FLOAT16)
    rng = np.random.default_rng(5)
    embedding, logits = rng.random(1280, dtype=np.float32), rng.normal(size=1000).astype(np.float32)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO catalog_imageembedding (image_id, backbone_version, embedding, logits, created_at) "
            "VALUES (%s, 'b', %s, %s, now()), (%s, 'b', %s, %s, now())",
            [intact.pk, embedding.tobytes(), logits.tobytes(), damaged.pk, b"\0" * 8, logits.tobytes()],
        )

    # when migrated forward
    _migrate(latest)

    # then the intact row holds both arrays as float16, stored in place; the damaged one is gone
    with connection.cursor() as cursor:
        cursor.execute("SELECT image_id, outputs FROM catalog_imageembedding")
        rows = cursor.fetchall()
        cursor.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = 'catalog_imageembedding'::regclass AND attname = 'outputs'"
        )
        assert cursor.fetchone()[0] == "p"
    assert [image_id for image_id, _ in rows] == [intact.pk]
    stored = np.frombuffer(bytes(rows[0][1]), "<f2")
    np.testing.assert_array_equal(stored, np.concatenate([embedding, logits]).astype(np.float16))

    # when migrated back, then the float32 columns hold the (rounded) arrays again
    _migrate(BEFORE_FLOAT16)
    with connection.cursor() as cursor:
        cursor.execute("SELECT embedding, logits FROM catalog_imageembedding")
        back_embedding, back_logits = cursor.fetchone()
    back = np.concatenate([np.frombuffer(bytes(values), "<f4") for values in (back_embedding, back_logits)])
    np.testing.assert_array_equal(back, stored.astype(np.float32))
