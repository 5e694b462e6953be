"""Many photos through one classifier: parallel decoding, one onnxruntime call per batch.

Decoding and resizing run in a thread pool (Pillow releases the GIL), overlapped with inference
on the previous batch (onnxruntime releases it too), so on a 2-core machine the CNN rarely waits
for JPEG decoding. Used by workers for batched uploads and bulk reclassification, and by the
benchmark for the in-process limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from classifier.model import MAX_BATCH, ImageClassifier, Prediction
from classifier.preprocess import INPUT_SIZE, ImageRejected, ImageSource, load_image, to_batch

K = TypeVar("K", bound=Hashable)

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


class BatchClassifier:
    """Classifies streams of photos with an ``ImageClassifier`` and a decode thread pool.

    ``decode_threads``: decoding threads (default 2). ``batch_size``: photos per onnxruntime call
    (at most ``MAX_BATCH``; each photo is fed once per head view). Thread-safe for one caller at a
    time; create one per process and reuse it.
    """

    def __init__(
        self, classifier: ImageClassifier, *, decode_threads: int = 2, batch_size: int = MAX_BATCH
    ) -> None:
        if classifier.backbone is None:
            raise RuntimeError("BatchClassifier needs a classifier with a backbone.")
        self.classifier = classifier
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.decode_threads = max(1, decode_threads)
        self._pool = ThreadPoolExecutor(max_workers=self.decode_threads, thread_name_prefix="decode")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, loader: PhotoLoader) -> np.ndarray:
        """Load, decode and crop one photo: float32 (V, 3, 224, 224), one row per head view."""
        image = load_image(loader())
        views = self.classifier.head.views
        return np.concatenate(
            [to_batch([image], INPUT_SIZE, resize_ratio=v.resize_ratio, mirror=v.mirror) for v in views]
        )

    def _submit(self, items: Sequence[tuple[K, PhotoLoader]]) -> list[tuple[K, Future[np.ndarray]]]:
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

        The next batch is decoded while the current one runs through the network. A photo that
        cannot be decoded or loaded fails alone. ``batch_size`` overrides the instance's for this
        call. ``on_batch(keys)`` is called before each batch is decoded, with the keys of every
        photo then being decoded or run (the current batch and the next), e.g. to record them so
        that a photo that crashes the process can be found afterwards.
        """
        size = max(1, min(batch_size or self.batch_size, MAX_BATCH))
        iterator = iter(items)

        def next_chunk() -> list[tuple[K, PhotoLoader]]:
            chunk = []
            for item in iterator:
                chunk.append(item)
                if len(chunk) == size:
                    break
            return chunk

        first = next_chunk()
        if on_batch is not None and first:
            on_batch([key for key, _ in first])
        pending = self._submit(first)
        while pending:
            upcoming = next_chunk()
            if on_batch is not None:
                on_batch([key for key, _ in pending] + [key for key, _ in upcoming])
            submitted = self._submit(upcoming)
            yield from self._infer(pending, top_k)
            pending = submitted

    def classify_all(self, items: Iterable[tuple[K, PhotoLoader]], top_k: int = 5) -> list[BatchOutcome[K]]:
        """``classify`` collected into a list."""
        return list(self.classify(items, top_k=top_k))

    def _infer(self, pending: list[tuple[K, Future[np.ndarray]]], top_k: int) -> list[BatchOutcome[K]]:
        began = time.perf_counter()
        outcomes: list[BatchOutcome[K]] = []
        ready: list[tuple[BatchOutcome[K], np.ndarray]] = []
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
        assert classifier.backbone is not None
        count, views = len(ready), len(classifier.head.views)
        # View-major layout, as ImageClassifier.predict: all photos in view 0, then view 1, ...
        batch = np.stack([arrays for _, arrays in ready], axis=1).reshape(
            views * count, 3, INPUT_SIZE, INPUT_SIZE
        )
        embeddings, logits = classifier.backbone.run(batch)
        embeddings = embeddings.reshape(views, count, -1).mean(axis=0)
        logits = logits.reshape(views, count, -1).mean(axis=0)
        inferred = time.perf_counter()
        tops = classifier.top_k_from_scores(classifier.scores_from_outputs(embeddings, logits), top_k)
        finished = time.perf_counter()
        timings = {
            "wait_decode_ms": (decoded - began) * 1000.0 / count,
            "backbone_ms": (inferred - decoded) * 1000.0 / count,
            "head_ms": (finished - inferred) * 1000.0 / count,
        }
        for (outcome, _), top, embedding, image_logits in zip(ready, tops, embeddings, logits, strict=True):
            outcome.prediction = Prediction(
                top_k=top,
                model_version=classifier.model_version,
                embedding=embedding,
                logits=image_logits,
                timings_ms=dict(timings),
            )
        return outcomes
