"""Fault injection against real processes: `make chaos` (`python -m dev.chaos`).

Starts embedded PostgreSQL and Redis, real Celery workers, uploads photos, and breaks things
while they are classified: SIGKILL of a pool process and of a whole worker, a Redis restart
that loses its queue, a PostgreSQL outage, a listing deleted mid-classification, a storage read
error, a corrupt model cache. It ends with one SQL check over every photo: DONE with exactly one
suggestion, or FAILED with the reason its fault calls for. The last run's table is written to
docs/RELIABILITY.md. The process helpers here are also what the fault tests use.
"""
