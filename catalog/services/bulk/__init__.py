"""Bulk reclassification: a job re-suggests categories for the catalogue with one model version.

The job walks listings by primary key in chunks of about `BULK_CHUNK_SIZE` photos (whole
listings, so a listing's suggestion is derived inside one chunk) and sends one task per chunk to
the `bulk` queue; fresh uploads keep their own queue. Everything is restartable: chunk rows
persist progress, suggestions are upserted (unique on image + model version), a re-run skips
photos that already have a suggestion for the version, and chunk counters are absolute, so a
redelivered chunk never counts twice.

A dry run computes the same suggestions (and caches embeddings, which no one sees) but writes no
suggestion and touches no listing; its report says how many listings would change category.

Modules (import them directly): `scope` (the job's photos, its active states), `jobs` (start,
staff actions, dispatch), `planning` (laying out chunks), `chunks` (one chunk as a worker runs
it), `closing` (a chunk's listings and counters), `reports` (progress, closing a job, its
summary).
"""
