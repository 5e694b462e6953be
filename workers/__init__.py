"""Celery workers: tasks and per-process model loading. The app itself is `config.celery`."""

import os

# Before numpy loads: its OpenBLAS would start a spinning thread per core in every worker
# process, beside onnxruntime's and the decoders'. The head's small float64 matrix products
# (head-only reclassification) ran 8x slower that way on 2 busy cores than on one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
