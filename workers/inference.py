"""The classifier of this worker process: loaded once, after fork, never in the parent.

Threads per process = cores / processes, because oversubscribed onnxruntime thread pools
silently halve throughput.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from classifier import ImageClassifier

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_classifier: ImageClassifier | None = None
_AUTO_THREADS_ENV = "CLASSIFIER_THREADS_AUTO"


def set_process_count(processes: int) -> None:
    """Record how many worker processes share this machine (called in the parent, before fork)."""
    cores = os.cpu_count() or 1
    os.environ[_AUTO_THREADS_ENV] = str(max(1, cores // max(1, processes)))


def threads_per_process() -> int:
    if settings.CLASSIFIER_NUM_THREADS > 0:
        return settings.CLASSIFIER_NUM_THREADS
    return int(os.environ.get(_AUTO_THREADS_ENV) or os.cpu_count() or 1)


def providers() -> list[str] | None:
    """onnxruntime execution providers for CLASSIFIER_DEVICE ("cpu" or "cuda")."""
    if settings.CLASSIFIER_DEVICE == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return None


def get_classifier() -> ImageClassifier:
    """The process-wide classifier, loaded on first use (export cached on disk)."""
    global _classifier
    if _classifier is None:
        with _lock:
            if _classifier is None:
                from classifier import ImageClassifier

                _classifier = ImageClassifier.load(
                    head_path=settings.CLASSIFIER_HEAD_PATH or None,
                    cache_dir=settings.CLASSIFIER_CACHE_DIR or None,
                    num_threads=threads_per_process(),
                    providers=providers(),
                )
                logger.info(
                    "classifier loaded: %s, %d threads", _classifier.model_version, threads_per_process()
                )
    return _classifier


def reset_after_fork() -> None:
    """Forget a classifier inherited from the parent (never used across fork)."""
    global _classifier
    _classifier = None
