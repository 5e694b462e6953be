"""The embedding cache keeps each photo's backbone outputs as one float16 array stored in place.

Before: the embedding and the logits as float32, 9,120 bytes a photo in two columns, which
PostgreSQL compressed and stored out of line (TOAST): reading a photo's outputs back meant two
TOAST index lookups and several pieces to fetch and decompress, most of a head-only job's cost.
After: one column `outputs`, float16 little-endian, the embedding (1280,) then the logits (1000,),
4,560 bytes, `STORAGE PLAIN` (never compressed nor moved out of line: one row per page, read in
place). The table's size stays about the same (one photo per 8 KB page, as compressed float32
took too); reading it costs about half (docs/BENCHMARKS.md, "Head-only: where the time goes").

Existing rows are converted in batches of `BATCH` (a million cached photos take a few minutes);
a row whose arrays have other sizes (damaged) is dropped, so the photo is embedded again. The
reverse converts back to float32 (the float16 rounding stays).
"""

from django.db import migrations, models

TABLE = "catalog_imageembedding"
EMBEDDING_DIM, LOGITS_DIM = 1280, 1000
BATCH = 2000


def _batches(cursor, columns):
    last = 0
    while True:
        cursor.execute(f"SELECT id, {columns} FROM {TABLE} WHERE id > %s ORDER BY id LIMIT %s", [last, BATCH])
        rows = cursor.fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield rows


def to_float16(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE})")
        if not cursor.fetchone()[0]:
            return
        # Only now: a process that migrates an empty database (tests, benchmarks) then goes on
        # to set numpy's threads as a worker does (`workers/__init__.py`).
        import numpy as np

        for rows in _batches(cursor, "embedding, logits"):
            ids, packed, damaged = [], [], []
            for pk, embedding, logits in rows:
                if len(embedding) != 4 * EMBEDDING_DIM or len(logits) != 4 * LOGITS_DIM:
                    damaged.append(pk)
                    continue
                values = np.concatenate([np.frombuffer(embedding, "<f4"), np.frombuffer(logits, "<f4")])
                largest = float(np.finfo(np.float16).max)  # clipped, as the classifier does
                packed.append(np.clip(values, -largest, largest).astype("<f2").tobytes())
                ids.append(pk)
            cursor.execute(
                f"UPDATE {TABLE} SET outputs = v.outputs "
                f"FROM unnest(%s::bigint[], %s::bytea[]) AS v(id, outputs) WHERE {TABLE}.id = v.id",
                [ids, packed],
            )
            if damaged:
                cursor.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s::bigint[])", [damaged])
        cursor.execute(f"DELETE FROM {TABLE} WHERE outputs IS NULL")


def to_float32(apps, schema_editor):
    import numpy as np

    with schema_editor.connection.cursor() as cursor:
        for rows in _batches(cursor, "outputs"):
            ids = [pk for pk, _ in rows]
            values = np.stack([np.frombuffer(outputs, "<f2") for _, outputs in rows]).astype("<f4")
            cursor.execute(
                f"UPDATE {TABLE} SET embedding = v.embedding, logits = v.logits "
                f"FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[]) AS v(id, embedding, logits) "
                f"WHERE {TABLE}.id = v.id",
                [
                    ids,
                    [row[:EMBEDDING_DIM].tobytes() for row in values],
                    [row[EMBEDDING_DIM:].tobytes() for row in values],
                ],
            )


class Migration(migrations.Migration):
    dependencies = [("catalog", "0008_flow_merge_speed_embedding_lz4")]

    operations = [
        migrations.AddField(
            model_name="imageembedding",
            name="outputs",
            field=models.BinaryField(null=True),
        ),
        # Nullable while both layouts exist, so that the reverse can add them back empty and fill them.
        migrations.AlterField(
            model_name="imageembedding", name="embedding", field=models.BinaryField(null=True)
        ),
        migrations.AlterField(
            model_name="imageembedding", name="logits", field=models.BinaryField(null=True)
        ),
        migrations.RunPython(to_float16, to_float32),
        migrations.AlterField(
            model_name="imageembedding",
            name="outputs",
            field=models.BinaryField(
                help_text="float16 little-endian: the embedding (1280,) then the ImageNet logits (1000,), "
                "4,560 bytes (catalog.services.embeddings)"
            ),
        ),
        migrations.RemoveField(model_name="imageembedding", name="embedding"),
        migrations.RemoveField(model_name="imageembedding", name="logits"),
        migrations.RunSQL(
            f"ALTER TABLE {TABLE} ALTER COLUMN outputs SET STORAGE PLAIN",
            f"ALTER TABLE {TABLE} ALTER COLUMN outputs SET STORAGE EXTENDED",
        ),
    ]
