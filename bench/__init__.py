"""Throughput and latency benchmark of the whole system: `make bench` (`python -m bench`).

Everything is measured in one run, on one machine, with real PostgreSQL, Redis and Celery workers
(embedded servers when `DATABASE_URL` / `CELERY_BROKER_URL` are unset), on the real photos of
`../shared/datasets/clothing-small` and copies of them. Results go to `bench/results.json` and to
the "Throughput and latency" section of `docs/BENCHMARKS.md`.
"""
