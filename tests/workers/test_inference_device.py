"""Worker start-up for a device: a CUDA worker is one process (solo or threads pool), never a
forked pool, and gets its larger batch; the view policy's margin comes from the settings."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from classifier.views import DEFAULT_SECOND_VIEW_MARGIN
from workers import inference


@pytest.fixture(autouse=True)
def _restore_pool_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "_one_process_pool", False)
    monkeypatch.setenv("CLASSIFIER_THREADS_AUTO", os.environ.get("CLASSIFIER_THREADS_AUTO", "1"))


def test_a_cuda_worker_refuses_the_prefork_pool(settings: Any) -> None:
    settings.CLASSIFIER_DEVICE = "cuda"
    for pool in ("prefork", None):  # None: Celery's default, prefork
        with pytest.raises(RuntimeError) as refused:
            inference._check_pool(sender=SimpleNamespace(pool_cls=pool))
        assert str(refused.value) == inference.GPU_NEEDS_ONE_PROCESS.format(pool="prefork")


def test_a_solo_or_threads_pool_is_one_process_with_every_core(settings: Any) -> None:
    settings.CLASSIFIER_DEVICE = "cuda"
    settings.CLASSIFIER_NUM_THREADS = 0
    for pool in ("solo", "threads"):
        # given a worker started with that pool and a concurrency of 4
        inference._check_pool(sender=SimpleNamespace(pool_cls=pool))
        inference.set_process_count(4)
        # then its one process gets every core's threads
        assert inference.threads_per_process() == (os.cpu_count() or 1)


def test_a_cpu_worker_keeps_its_forked_pool_and_splits_the_cores(settings: Any) -> None:
    settings.CLASSIFIER_DEVICE = "cpu"
    settings.CLASSIFIER_NUM_THREADS = 0
    inference._check_pool(sender=SimpleNamespace(pool_cls="prefork"))
    inference.set_process_count(2)
    assert inference.threads_per_process() == max(1, (os.cpu_count() or 1) // 2)


def test_batch_size_by_device_unless_set(settings: Any) -> None:
    settings.CLASSIFIER_BATCH_SIZE = 0
    settings.CLASSIFIER_DEVICE = "cpu"
    assert inference.batch_size() == 16
    settings.CLASSIFIER_DEVICE = "cuda"
    assert (inference.batch_size(), inference.precision()) == (64, "fp32")
    assert inference.providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    settings.CLASSIFIER_BATCH_SIZE = 24
    assert inference.batch_size() == 24


def test_second_view_margin_comes_from_the_settings(settings: Any) -> None:
    settings.CLASSIFIER_SECOND_VIEW_MARGIN = None
    assert inference.view_policy().second_view_margin == DEFAULT_SECOND_VIEW_MARGIN
    settings.CLASSIFIER_SECOND_VIEW_MARGIN = 1.0
    assert inference.view_policy().second_view_margin == 1.0
