"""The classifier of this worker process: loaded once, after fork, never in the parent.

Threads per process = cores / processes, because oversubscribed onnxruntime thread pools
silently halve throughput.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from celery import signals
from django.conf import settings

if TYPE_CHECKING:
    from classifier import ImageClassifier
    from classifier.batching import BatchClassifier
    from classifier.taxonomy import Taxonomy
    from classifier.views import ViewPolicy

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_classifier: ImageClassifier | None = None
# The classifier of the active version and when the active version was last looked up.
_serving: ImageClassifier | None = None
_checked_at = 0.0
_batchers: dict[str, BatchClassifier] = {}
_by_version: dict[str, ImageClassifier] = {}
# Why this process cannot classify, once its model failed to load ("" while it can).
_unavailable = ""
_AUTO_THREADS_ENV = "CLASSIFIER_THREADS_AUTO"
_one_process_pool = False
MODEL_VERSION_UNAVAILABLE = (
    "This worker serves model version {serving!r} and cannot load {name!r}; "
    "activate the version first or start workers that serve it."
)


class ServableVersion(Protocol):
    """What a worker reads of a model version's row to serve it: its name and head artifact."""

    name: str
    head_manifest: Any
    head_npz: Any


class ModelVersionUnavailable(RuntimeError):
    """The worker cannot score with the requested model version; `str(error)` is shown to staff."""


class ClassifierUnavailable(RuntimeError):
    """This worker process cannot classify at all (its model failed to load or verify); `str(error)`
    says why. Work handed to it goes back to the queue untouched."""


def set_process_count(processes: int) -> None:
    """Record how many worker processes share this machine (called in the parent, before fork).
    A solo or threads pool is one process whatever its concurrency."""
    cores = os.cpu_count() or 1
    processes = 1 if _one_process_pool else processes
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


GPU_NEEDS_ONE_PROCESS = (
    "CLASSIFIER_DEVICE=cuda needs one worker process per GPU without fork: start it with "
    "--pool solo (or --pool threads), one worker per GPU (CUDA_VISIBLE_DEVICES), not --pool {pool}."
)


@signals.worker_init.connect
def _check_pool(sender: Any = None, **_: Any) -> None:
    """CUDA contexts do not survive fork and one GPU shared by several processes holds several
    copies of the model: a CUDA worker runs the solo or threads pool, one worker per GPU. Those
    pools are one process, which then gets every core's threads."""
    global _one_process_pool
    pool = getattr(sender, "pool_cls", None)  # a name ("prefork", "solo") until Celery resolves it
    name = (pool if isinstance(pool, str) else getattr(pool, "__module__", "")) or "prefork"
    if settings.CLASSIFIER_DEVICE == "cuda" and "prefork" in name:
        raise RuntimeError(GPU_NEEDS_ONE_PROCESS.format(pool=name))
    _one_process_pool = "prefork" not in name
    if _one_process_pool:
        set_process_count(1)


def batch_size() -> int:
    """Photos per onnxruntime call: CLASSIFIER_BATCH_SIZE, else 16 on the CPU (faster than 32 on
    2 cores, half the activation memory) and 64 on a GPU (which needs larger batches to fill)."""
    if settings.CLASSIFIER_BATCH_SIZE > 0:
        return settings.CLASSIFIER_BATCH_SIZE
    return 64 if settings.CLASSIFIER_DEVICE == "cuda" else 16


def view_policy() -> ViewPolicy:
    """Which of the head's views run for which photo (CLASSIFIER_SECOND_VIEW_MARGIN, else the
    classifier's default; see `classifier.views`)."""
    from classifier.views import ViewPolicy

    margin = settings.CLASSIFIER_SECOND_VIEW_MARGIN
    return ViewPolicy() if margin is None else ViewPolicy(second_view_margin=margin)


def decode_threads() -> int:
    """Decoding threads per process: CLASSIFIER_DECODE_THREADS, else one per onnxruntime thread."""
    return settings.CLASSIFIER_DECODE_THREADS or threads_per_process()


def precision() -> str:
    """Backbone precision actually served: CLASSIFIER_PRECISION on the CPU; the CUDA provider
    always runs the fp32 graph (QDQ int8 is a CPU speed-up)."""
    return "fp32" if settings.CLASSIFIER_DEVICE == "cuda" else settings.CLASSIFIER_PRECISION


def prepare_backbone_files() -> str | None:
    """Verify the backbone files this worker will load, building or rebuilding what is missing
    or fails its checks (ONNX export, int8 quantization; SHA-256 and smoke inference, see
    `classifier.integrity`), in a child process: called in the worker's main process before the
    pool forks, so pool processes load in seconds (within `worker_proc_alive_timeout`) and the
    main process never imports torch or starts onnxruntime. Concurrent builders are serialised by
    a file lock. Returns None when the files are good, else why not (the child's last words)."""
    cache_dir = settings.CLASSIFIER_CACHE_DIR or None
    command = [sys.executable, "-m", "classifier"]
    if cache_dir:
        command += ["--cache-dir", cache_dir]
    command += ["export", "--precision", precision()]
    if settings.CLASSIFIER_HEAD_PATH:
        command += ["--model", settings.CLASSIFIER_HEAD_PATH]
    began = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True)
    for line in completed.stderr.splitlines():
        logger.warning("model files: %s", line)
    if completed.returncode != 0:
        said = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
        if not said:
            return f"{' '.join(command)} exited with status {completed.returncode}"
        return said[-1].removeprefix("error: ")
    logger.info("model files verified in %.1f s: %s", time.monotonic() - began, completed.stdout.strip())
    return None


def _load() -> ImageClassifier:
    from classifier.backbone import OnnxBackbone
    from classifier.head import LinearHead
    from classifier.model import ImageClassifier
    from classifier.quantize import cached_path
    from classifier.taxonomy import load_taxonomy

    head = LinearHead.load(settings.CLASSIFIER_HEAD_PATH or None)
    path = cached_path(precision(), settings.CLASSIFIER_CACHE_DIR or None, views=head.views)
    # Decoding threads share the cores with onnxruntime's: no busy-waiting between operators.
    backbone = OnnxBackbone.verified(
        path, num_threads=threads_per_process(), providers=providers(), spin=False
    )
    return ImageClassifier(head=head, taxonomy=load_taxonomy(), backbone=backbone, view_policy=view_policy())


def base_classifier() -> ImageClassifier:
    """The process-wide classifier with the head this worker ships with (CLASSIFIER_HEAD_PATH or
    the default artifact), loaded on first use from the verified cache (its bytes match their
    manifest, its smoke inference the one recorded at build time). Its backbone is shared by
    every version this process serves.

    Raises `ClassifierUnavailable` when the model does not load or verify; the process then
    stays unavailable (it never retries a file that failed once)."""
    global _classifier, _unavailable
    if _classifier is None:
        with _lock:
            if _unavailable:
                raise ClassifierUnavailable(_unavailable)
            if _classifier is None:
                try:
                    _classifier = _load()
                except Exception as error:  # ModelCacheError, a missing head, onnxruntime
                    _unavailable = str(error) or type(error).__name__
                    raise ClassifierUnavailable(_unavailable) from error
                logger.info(
                    "classifier loaded: %s, %s, %d threads",
                    _classifier.model_version,
                    precision(),
                    threads_per_process(),
                )
    return _classifier


def get_classifier() -> ImageClassifier:
    """The classifier of the ACTIVE model version (see `follow_active`), falling back to the
    shipped head when no version is active or the active one cannot be served here."""
    return follow_active(base_classifier())


def follow_active(base: ImageClassifier) -> ImageClassifier:
    """Serve the active `ModelVersion`: look it up at most every ACTIVE_MODEL_CHECK_S seconds
    (one indexed query), and on a change load only its head from the row (the backbone is
    shared). A version this worker cannot serve (another backbone, a bad artifact) or a
    database error keeps the current classifier, with a warning."""
    global _serving, _checked_at
    now = time.monotonic()
    if _serving is not None and now - _checked_at < settings.ACTIVE_MODEL_CHECK_S:
        return _serving
    from catalog.selectors import registry as registry_selectors
    from workers.retry import DATABASE_ERRORS

    current = _serving or base
    try:
        _attach_shipped(base)
        active = registry_selectors.model_version_active_name()
        _checked_at = now
        if active is None or active[1] == base.model_version:
            chosen = base
        elif active[1] == current.model_version:
            chosen = current
        else:
            row = registry_selectors.model_version_servable(version_id=active[0])
            if row is None:  # deleted since: look again at the next check
                return current
            chosen = classifier_for_version(row)
            logger.info("now serving model version %s", chosen.model_version)
    except ModelVersionUnavailable as error:
        logger.warning("active model version not served here: %s", error)
        chosen = current
    except DATABASE_ERRORS:
        logger.warning("could not look up the active model version", exc_info=True)
        return current
    _serving = chosen
    return chosen


def _attach_shipped(base: ImageClassifier) -> None:
    """Register the shipped head's version (the first becomes active) with its artifact, figures
    and auto-accept thresholds, before it scores a photo: then the registry can compare with it,
    show it and activate it again like any trained version, and its first suggestions auto-accept
    like every later one. Checked at each look-up of the active version (one indexed query once
    attached), so a row created meanwhile without them gets them."""
    from catalog.selectors import registry as registry_selectors
    from catalog.services import suggestions

    if registry_selectors.model_version_has_artifact(name=base.model_version):
        return
    manifest, payload = base.head.to_bytes()
    policy = base.head.auto_accept
    suggestions.model_version_shipped_register(
        name=base.model_version,
        backbone_version=base.backbone_version,
        head_manifest=manifest,
        head_npz=payload,
        metrics=dict(base.head.metrics),
        auto_accept_thresholds=dict(policy.thresholds),
        auto_accept_precision=policy.target_precision,
    )


def taxonomy() -> Taxonomy:
    """The shipped taxonomy plus categories staff added in the database since (a trained head
    may know them)."""
    from catalog.selectors import catalogue as catalogue_selectors
    from classifier.taxonomy import Category, Taxonomy, load_taxonomy

    shipped = load_taxonomy()
    known = set(shipped.slugs)
    extra = [entry for entry in catalogue_selectors.taxonomy_entries() if entry["slug"] not in known]
    if not extra:
        return shipped
    added = [
        Category(slug=str(e["slug"]), name=str(e["name"]), parent=e["parent"], imagenet_ids=())  # type: ignore[arg-type]
        for e in extra
    ]
    return Taxonomy([*shipped.categories, *added])


def classifier_for_version(model_version: ServableVersion) -> ImageClassifier:
    """The classifier that scores as `model_version`.

    The process classifier when the names match; otherwise, when the version carries its head
    (`head_manifest` + `head_npz`, from training) for this worker's backbone version, a
    classifier sharing the process's backbone with that head (cached per version). Raises
    `ModelVersionUnavailable` otherwise.
    """
    classifier = base_classifier()
    if model_version.name == classifier.model_version:
        return classifier
    cached = _by_version.get(model_version.name)
    if cached is not None:
        return cached
    manifest = getattr(model_version, "head_manifest", None) or {}
    payload = bytes(getattr(model_version, "head_npz", b"") or b"")
    if not payload or manifest.get("backbone_version") != classifier.backbone_version:
        raise ModelVersionUnavailable(
            MODEL_VERSION_UNAVAILABLE.format(serving=classifier.model_version, name=model_version.name)
        )
    from classifier.head import ArtifactError, LinearHead
    from classifier.model import ImageClassifier

    try:
        head = LinearHead.from_bytes(manifest, payload)
        other = ImageClassifier(
            head=head, taxonomy=taxonomy(), backbone=classifier.backbone, view_policy=classifier.view_policy
        )
    except ArtifactError as error:
        raise ModelVersionUnavailable(str(error)) from error
    other.model_version = model_version.name
    with _lock:
        _by_version[model_version.name] = other
    return other


def batch_classifier_for(classifier: ImageClassifier) -> BatchClassifier:
    """A `BatchClassifier` (decode thread pool) around `classifier`, one per model version."""
    batcher = _batchers.get(classifier.model_version)
    if batcher is None or batcher.classifier is not classifier:
        from classifier.batching import BatchClassifier

        with _lock:
            batcher = BatchClassifier(classifier, decode_threads=decode_threads(), batch_size=batch_size())
            _batchers[classifier.model_version] = batcher
    return batcher


def batch_classifier_discard(classifier: ImageClassifier) -> None:
    """Drop the decode pool of `classifier`'s version (a thread of it may be stuck in a read that
    timed out); the next batch gets a fresh one."""
    with _lock:
        batcher = _batchers.pop(classifier.model_version, None)
    if batcher is not None:
        batcher.close()


def reset_after_fork() -> None:
    """Forget a classifier inherited from the parent (never used across fork)."""
    global _classifier, _serving, _checked_at, _unavailable
    _classifier = None
    _unavailable = ""
    _serving = None
    _checked_at = 0.0
    _batchers.clear()
    _by_version.clear()
