"""Many photos through one classifier: parallel decoding, one onnxruntime call per batch.

A pipeline in one process: reading, decoding (JPEG draft scaling, ``Image.reduce``) and cropping
the first view run in a thread pool (Pillow releases the GIL) for the next batch while
onnxruntime (which releases it too) runs the current one; no extra processes, so no extra copy
of the model in memory. A photo that cannot be read or decoded fails alone, with its reason.
Used by workers for batched uploads and bulk reclassification, and by the benchmark.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from classifier.model import ImageClassifier, Prediction
from classifier.preprocess import ImageRejected, ImageSource, load_image

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Largest batch accepted: a GPU wants batches of 64 or more; on the CPU 16 is best (see workers).
MAX_BATCH_SIZE = 256

#: A photo to classify: a key chosen by the caller and a function returning the photo's bytes (or
#: a path / file object). The loader runs in the decode pool; exceptions other than
#: ``ImageRejected`` it raises (storage errors) are reported for that photo alone.
PhotoLoader = Callable[[], ImageSource]


@dataclass
class BatchOutcome(Generic[K]):
    """Result for one photo: exactly one of ``prediction`` and ``error`` is set.

    ``error`` is the ``ImageRejected`` for an undecodable photo, or the exception the loader raised.
    """

    key: K
    prediction: Prediction | None = None
    error: BaseException | None = None


@dataclass
class _Prepared:
    """A decoded photo and its first view, float32 (3, 224, 224); the image stays for the other
    views, which the view policy may ask for after the first has been scored."""

    image: Image.Image
    first: np.ndarray
    decode_ms: float


class BatchClassifier:
    """Classifies streams of photos with an ``ImageClassifier`` and a decode thread pool.

    ``decode_threads``: decoding threads (default 2). ``batch_size``: photos per onnxruntime call
    (default 32, at most ``MAX_BATCH_SIZE``). ``prefetch``: batches decoded ahead of the one the
    network runs (default 1). The head's views run as the classifier's ``view_policy`` says: the first for
    every photo, the others (one more onnxruntime call per batch) only for uncertain photos.
    Thread-safe for one caller at a time; create one per process and reuse it.
    """

    def __init__(
        self,
        classifier: ImageClassifier,
        *,
        decode_threads: int = 2,
        batch_size: int = 32,
        prefetch: int = 1,
    ) -> None:
        if classifier.backbone is None:
            raise RuntimeError("BatchClassifier needs a classifier with a backbone.")
        self.classifier = classifier
        self.batch_size = max(1, min(batch_size, MAX_BATCH_SIZE))
        self.decode_threads = max(1, decode_threads)
        self.prefetch = max(1, prefetch)
        self._pool = ThreadPoolExecutor(max_workers=self.decode_threads, thread_name_prefix="decode")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, loader: PhotoLoader) -> _Prepared:
        """Load and decode one photo and crop its first view (in a decode thread)."""
        began = time.perf_counter()
        image = load_image(loader())
        classifier = self.classifier
        first = classifier.view_batch(
            [image], [classifier.view_policy.first_index(len(classifier.head.views))]
        )
        return _Prepared(image=image, first=first[0], decode_ms=(time.perf_counter() - began) * 1000.0)

    def _submit(self, items: Sequence[tuple[K, PhotoLoader]]) -> list[tuple[K, Future[_Prepared]]]:
        return [(key, self._pool.submit(self._prepare, loader)) for key, loader in items]

    def classify(
        self,
        items: Iterable[tuple[K, PhotoLoader]],
        top_k: int = 5,
        *,
        batch_size: int | None = None,
        on_batch: Callable[[list[K]], None] | None = None,
    ) -> Iterator[BatchOutcome[K]]:
        """Yields one ``BatchOutcome`` per item, in input order, batch by batch.

        While the network runs a batch, the next ``prefetch`` batches are decoded in the pool. A
        photo that cannot be decoded or loaded fails alone. ``batch_size`` overrides the
        instance's for this call; photos that all fit in one batch are run as two halves (at
        least ``SPLIT_MIN`` photos each), so the second half decodes while the first runs.
        ``on_batch(keys)`` is called before each batch is submitted for decoding, with the keys
        of every photo then being decoded or run, e.g. to record them so that a photo that
        crashes the process can be found afterwards.
        """
        pending: deque[list[tuple[K, Future[_Prepared]]]] = deque()
        for batch in _batches(items, max(1, min(batch_size or self.batch_size, MAX_BATCH_SIZE))):
            if len(pending) > self.prefetch:
                yield from self._infer(pending.popleft(), top_k)
            if on_batch is not None:
                on_batch([key for submitted in pending for key, _ in submitted] + [key for key, _ in batch])
            pending.append(self._submit(batch))
        while pending:
            yield from self._infer(pending.popleft(), top_k)

    def classify_all(self, items: Iterable[tuple[K, PhotoLoader]], top_k: int = 5) -> list[BatchOutcome[K]]:
        """``classify`` collected into a list."""
        return list(self.classify(items, top_k=top_k))

    def _infer(self, pending: list[tuple[K, Future[_Prepared]]], top_k: int) -> list[BatchOutcome[K]]:
        began = time.perf_counter()
        outcomes: list[BatchOutcome[K]] = []
        ready: list[tuple[BatchOutcome[K], _Prepared]] = []
        for key, future in pending:
            outcome: BatchOutcome[K] = BatchOutcome(key=key)
            outcomes.append(outcome)
            try:
                ready.append((outcome, future.result()))
            except ImageRejected as rejection:
                outcome.error = rejection
            except Exception as error:  # storage errors: reported for this photo only
                outcome.error = error
        if not ready:
            return outcomes
        decoded = time.perf_counter()
        classifier = self.classifier
        outputs = classifier.run_views(
            np.stack([prepared.first for _, prepared in ready]),
            lambda rows: [ready[row][1].image for row in rows],
        )
        inferred = time.perf_counter()
        count = len(ready)
        timings = {
            "wait_decode_ms": (decoded - began) * 1000.0 / count,
            "inference_ms": (inferred - decoded) * 1000.0 / count,
        }
        predictions = classifier.predictions(outputs, top_k, timings)
        for (outcome, prepared), prediction in zip(ready, predictions, strict=True):
            prediction.timings_ms = {"decode_ms": prepared.decode_ms, **prediction.timings_ms}
            outcome.prediction = prediction
        return outcomes


#: Smallest half when the photos of one batch are run as two halves to overlap decoding.
SPLIT_MIN = 4


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive batches of ``size`` items; when all the items fit in one batch of at least
    ``2 × SPLIT_MIN``, two halves instead, so that decoding the second overlaps running the first."""
    iterator = iter(items)
    first, second = list(islice(iterator, size)), list(islice(iterator, size))
    if not second and len(first) >= 2 * SPLIT_MIN:
        half = (len(first) + 1) // 2
        yield first[:half]
        yield first[half:]
        return
    if first:
        yield first
    while second:
        yield second
        second = list(islice(iterator, size))
