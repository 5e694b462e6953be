"""The embedding cache's arrays compressed with lz4 instead of PostgreSQL's default pglz.

Each photo caches ~9 KB of float32 (embedding and ImageNet logits), which TOAST compresses.
Head-only reclassification reads them back by the hundred thousand, and with pglz decompressing
was most of PostgreSQL's work: on 2 cores, a COPY out of 4,000 rows ran at ~27,000 rows/s with
pglz and ~45,000 with lz4, and writing them at ~3,200 and ~12,800 rows/s (sizes 118 MB and
159 MB for 20,000 rows; uncompressed, 215 MB). Only values written from now on use lz4; older
ones stay readable as they are. A server built without lz4 keeps pglz (a notice says so).
"""

from django.db import migrations

TABLE = "catalog_imageembedding"

FORWARD = f"""
DO $$
BEGIN
    ALTER TABLE {TABLE}
        ALTER COLUMN embedding SET COMPRESSION lz4, ALTER COLUMN logits SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server: the embedding cache stays pglz-compressed';
END $$;
"""

BACKWARD = (
    f"ALTER TABLE {TABLE} ALTER COLUMN embedding SET COMPRESSION DEFAULT, "
    "ALTER COLUMN logits SET COMPRESSION DEFAULT"
)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_access_staff_groups")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
