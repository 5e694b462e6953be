"""The decode → inference pipeline: same results as one photo at a time, in order, a bad photo
failing alone, and the next batch decoded while the network runs the current one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from classifier.batching import SPLIT_MIN, BatchClassifier, BatchOutcome
from classifier.model import ImageClassifier, Prediction
from classifier.preprocess import CORRUPT_IMAGE, EMPTY_FILE, ImageRejected


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _missing() -> bytes:
    raise FileNotFoundError("gone from storage")


@pytest.fixture
def batcher(image_classifier: ImageClassifier) -> Iterator[BatchClassifier]:
    batcher = BatchClassifier(image_classifier, decode_threads=2, batch_size=3, prefetch=1)
    yield batcher
    batcher.close()


def test_pipeline_gives_the_classifiers_results_in_order_and_bad_photos_fail_alone(
    batcher: BatchClassifier,
    image_classifier: ImageClassifier,
    fixture_photos: dict[str, Path],
    truncated_jpeg: bytes,
) -> None:
    # given eight good photos with a corrupt JPEG, an empty file and a photo missing from storage
    # among them, over four batches of three
    good = [path.read_bytes() for path in fixture_photos.values()]
    loaders: list[tuple[str, Callable[[], bytes]]] = [(f"good-{n}", _constant(d)) for n, d in enumerate(good)]
    loaders.insert(1, ("corrupt", _constant(truncated_jpeg)))
    loaders.insert(5, ("empty", _constant(b"")))
    loaders.insert(9, ("missing", _missing))
    # when they go through the pipeline
    outcomes = list(batcher.classify(loaders, top_k=5))
    # then there is one outcome per photo, in input order
    assert [outcome.key for outcome in outcomes] == [key for key, _ in loaders]
    by_key: dict[str, BatchOutcome[str]] = {outcome.key: outcome for outcome in outcomes}
    # and each bad photo failed alone, with its reason
    assert by_key["corrupt"].error == ImageRejected(CORRUPT_IMAGE) and by_key["corrupt"].prediction is None
    assert by_key["empty"].error == ImageRejected(EMPTY_FILE)
    assert isinstance(by_key["missing"].error, FileNotFoundError)
    # and every good photo got what the classifier gives it on its own
    alone = image_classifier.classify(good, top_k=5)
    for number, expected in enumerate(alone):
        assert isinstance(expected, Prediction)
        got = by_key[f"good-{number}"].prediction
        assert got is not None
        assert [s.slug for s in got.top_k] == [s.slug for s in expected.top_k]
        np.testing.assert_allclose(
            [s.confidence for s in got.top_k], [s.confidence for s in expected.top_k], atol=1e-5
        )
        assert got.views == expected.views
        assert set(got.timings_ms) == {"decode_ms", "wait_decode_ms", "inference_ms"}


def test_next_batch_is_decoded_while_the_network_runs(
    batcher: BatchClassifier, image_classifier: ImageClassifier, fixture_photos: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # given six photos in two batches of three; the last photo's loader signals that it ran
    photos = [path.read_bytes() for path in fixture_photos.values()][:6]
    second_batch_loaded = threading.Event()

    def signalling(data: bytes) -> Callable[[], bytes]:
        def load() -> bytes:
            second_batch_loaded.set()
            return data

        return load

    items = [(n, _constant(d)) for n, d in enumerate(photos[:5])] + [(5, signalling(photos[5]))]
    # and a network that, on its first call, waits (at most 30 s) for that photo to be loaded
    backbone = image_classifier.backbone
    assert backbone is not None
    original_run = backbone.run
    overlapped: list[bool] = []

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not overlapped:
            overlapped.append(second_batch_loaded.wait(timeout=30))
        return original_run(batch)

    monkeypatch.setattr(backbone, "run", run)
    # when classified
    outcomes = batcher.classify_all(items)
    # then the second batch was loaded while the first was in the network
    assert overlapped == [True]
    assert all(outcome.prediction is not None for outcome in outcomes)


def test_photos_in_flight_are_reported_before_they_are_decoded(
    batcher: BatchClassifier, fixture_photos: dict[str, Path]
) -> None:
    # given seven photos, batches of three, one batch decoded ahead
    data = next(iter(fixture_photos.values())).read_bytes()
    reported: list[list[int]] = []
    # when classified, recording each report
    outcomes = list(batcher.classify([(n, _constant(data)) for n in range(7)], on_batch=reported.append))
    # then each report holds the batch about to be decoded and the one before it, never more
    assert reported == [[0, 1, 2], [0, 1, 2, 3, 4, 5], [3, 4, 5, 6]]
    assert [outcome.key for outcome in outcomes] == list(range(7))


def test_photos_that_fit_one_batch_run_as_two_halves(
    batcher: BatchClassifier, fixture_photos: dict[str, Path]
) -> None:
    data = next(iter(fixture_photos.values())).read_bytes()
    count = 2 * SPLIT_MIN + 1
    reported: list[list[int]] = []
    outcomes = list(
        batcher.classify(
            [(n, _constant(data)) for n in range(count)], batch_size=16, on_batch=reported.append
        )
    )
    half = (count + 1) // 2
    assert reported == [list(range(half)), list(range(count))]
    assert len(outcomes) == count and all(outcome.prediction is not None for outcome in outcomes)
