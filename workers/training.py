"""Training and comparison tasks (the `training` queue).

`model_train_task(run_id)` trains a candidate head on every photo a seller or a reviewer labelled:
backbone outputs come from the `ImageEmbedding` cache (written by the classify tasks, one row per
photo and backbone version), and only photos missing from it are decoded and run through the
CNN, once, then cached. Which photos are held out for the version's metrics and comparisons, and
how two versions compare, are the catalog's rules (`catalog.services.training`); the worker
computes the backbone outputs, the candidate head (`classifier.training.candidate`) and each
version's answers. The candidate is stored inactive, with its head artifact, and compared with
the active version on the same held-out photos, so staff can activate it.

`model_compare_task(version_id)` re-runs that comparison against whatever version is active now.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from django.conf import settings
from django.utils import timezone

from catalog.selectors import registry as registry_selectors
from catalog.selectors import review as review_selectors
from catalog.services.registry import (
    image_embeddings_store,
    model_version_register,
    training_run_fail,
    training_run_finish,
    training_run_start,
)
from catalog.services.training import (
    NO_HELD_OUT_PHOTOS,
    model_comparison_photos,
    model_comparison_score,
    training_split,
)
from catalog.tasks_contract import TaskName
from config.celery import app
from workers import inference, retry
from workers.storage import photo_read

if TYPE_CHECKING:
    from classifier.head import LinearHead
    from classifier.model import ImageClassifier
    from classifier.taxonomy import Taxonomy
    from classifier.training.candidate import Candidate
    from classifier.training.outputs import LabelledOutputs

logger = logging.getLogger("workers.training")

EMBED_BATCH = 16
# User-facing messages; tests reuse them.
NOT_COMPARABLE = "{name} was trained on backbone {backbone}; this worker runs {serving}."
TRAINING_UNAVAILABLE = "Training could not reach a service it needs in {attempts} attempts ({error})."


class TrainedVersion(Protocol):
    """What the worker reads of a model version's row (services and selectors return the rows):
    its id, name, backbone and head artifact."""

    pk: Any
    name: str
    backbone_version: str
    head_manifest: Any
    head_npz: Any


def embed_missing(
    *,
    photos: Sequence[review_selectors.LabelledPhoto],
    classifier: ImageClassifier,
    read: Callable[[str], bytes] = photo_read,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], list[int]]:
    """Backbone outputs for `photos`: cached rows for this backbone version, and the CNN (with
    the serving head's views) only for photos without one, whose outputs are then cached.

    Returns ({image_id: (embedding float32 (D,), logits float32 (1000,))}, ids newly embedded).
    Photos that cannot be read or decoded are left out.
    """
    from classifier.outputs import at_stored_precision
    from classifier.preprocess import ImageRejected, load_image

    backbone_version = classifier.backbone_version
    cached = review_selectors.image_embeddings(
        image_ids=[p.image_id for p in photos], backbone_version=backbone_version
    )
    outputs = dict(cached)
    missing = [photo for photo in photos if photo.image_id not in outputs]
    computed: list[int] = []
    if missing and classifier.backbone is None:
        raise RuntimeError("photos without cached embeddings need a classifier with a backbone")
    for start in range(0, len(missing), EMBED_BATCH):
        chunk = missing[start : start + EMBED_BATCH]
        images, ids = [], []
        for photo in chunk:
            try:
                images.append(load_image(read(photo.file_name)))
            except (ImageRejected, FileNotFoundError) as error:
                logger.warning("training skips photo %s: %s", photo.image_id, error)
                continue
            ids.append(photo.image_id)
        if not images:
            continue
        assert classifier.backbone is not None
        # At the cache's precision, so a later training on these photos reads the same values.
        embedded = classifier.backbone.embed(images, classifier.head.views)
        embeddings, logits = (at_stored_precision(values) for values in embedded)
        rows = []
        for image_id, embedding, image_logits in zip(ids, embeddings, logits, strict=True):
            outputs[image_id] = (embedding, image_logits)
            rows.append((image_id, embedding, image_logits))
            computed.append(image_id)
        image_embeddings_store(backbone_version=backbone_version, rows=rows)
    return outputs, computed


def _labelled_outputs(
    photos: Sequence[review_selectors.LabelledPhoto], outputs: dict[int, tuple[np.ndarray, np.ndarray]]
) -> tuple[LabelledOutputs, np.ndarray, np.ndarray]:
    """The photos' outputs, the held-out mask and the calibration mask (`training_split`:
    photos the backbone's tuned tail trained on train the head but never calibrate it nor count
    in its held-out figures)."""
    from classifier.backbone import tail_trained_on

    kept = [photo for photo in photos if photo.image_id in outputs]
    if not kept:
        raise ValueError("There are no labelled photos to train on yet.")
    data = _outputs_of([p.image_id for p in kept], [p.slug for p in kept], outputs)
    split = training_split(photos=kept, tail_trained_on=tail_trained_on())
    return data, np.array(split.held_out, dtype=bool), np.array(split.calibrating, dtype=bool)


def _outputs_of(
    image_ids: Sequence[int], labels: Sequence[str], outputs: dict[int, tuple[np.ndarray, np.ndarray]]
) -> LabelledOutputs:
    from classifier.training.outputs import LabelledOutputs

    return LabelledOutputs(
        embeddings=np.stack([outputs[i][0] for i in image_ids]).astype(np.float32),
        logits=np.stack([outputs[i][1] for i in image_ids]).astype(np.float32),
        labels=list(labels),
        keys=list(image_ids),
    )


def head_of(version: TrainedVersion, base: ImageClassifier) -> LinearHead:
    """The head of a model version: its stored artifact, or the shipped head when the version is
    the one this worker ships with. Raises `ValueError` when neither applies."""
    from classifier.head import LinearHead

    payload = bytes(version.head_npz or b"")
    if payload:
        return LinearHead.from_bytes(version.head_manifest, payload)
    if version.name == base.model_version:
        return base.head
    raise ValueError(f"{version.name} has no stored head artifact.")


def comparison_photos(*, candidate: TrainedVersion, baseline: TrainedVersion) -> list[tuple[int, str]]:
    """The held-out photos two versions are compared on, as (image id, label), in id order
    (`model_comparison_photos`, leaving out the photos this backbone's tail trained on)."""
    from classifier.backbone import tail_trained_on

    return model_comparison_photos(version_ids=[candidate.pk, baseline.pk], tail_trained_on=tail_trained_on())


def compare(
    *,
    candidate: TrainedVersion,
    baseline: TrainedVersion,
    base: ImageClassifier,
    taxonomy: Taxonomy,
) -> Any:
    """Score `candidate` and `baseline` on the same held-out photos (`comparison_photos`; their
    cached backbone outputs, missing ones embedded when this worker runs that backbone) and
    record it (`model_comparison_score`); returns the recorded `ModelComparison`. Raises
    `ValueError` when a version was trained on another backbone or no photo can be scored."""
    from classifier.training.outputs import score_head

    for version in (candidate, baseline):
        if version.backbone_version and version.backbone_version != base.backbone_version:
            raise ValueError(
                NOT_COMPARABLE.format(
                    name=version.name, backbone=version.backbone_version, serving=base.backbone_version
                )
            )
    pairs = comparison_photos(candidate=candidate, baseline=baseline)
    photos = review_selectors.photos_by_id(image_ids=[i for i, _ in pairs])
    labels = dict(pairs)
    outputs, _ = embed_missing(photos=photos, classifier=base)
    kept = [image_id for image_id, _ in pairs if image_id in outputs]
    if not kept:
        raise ValueError(NO_HELD_OUT_PHOTOS.format(name=candidate.name))
    data = _outputs_of(kept, [labels[i] for i in kept], outputs)
    heads = {"candidate": head_of(candidate, base), "baseline": head_of(baseline, base)}
    return model_comparison_score(
        candidate_id=candidate.pk,
        baseline_id=baseline.pk,
        labels=data.labels,
        predicted={role: score_head(head, taxonomy, data)[0] for role, head in heads.items()},
        served={role: head.classes for role, head in heads.items()},
    )


def _candidate(
    *, run_id: int, base: ImageClassifier, data: LabelledOutputs, mask: np.ndarray, unbiased: np.ndarray
) -> Candidate:
    """Trains the candidate head of run `run_id` on `data` with the registry's settings."""
    from classifier.training.candidate import CandidateConfig, train_candidate

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    config = CandidateConfig(
        backbone_version=base.backbone_version,
        version=f"trained-{stamp}-run{run_id}",
        views=tuple(base.head.views),
        feature_transform=base.head.feature_transform,
        precision=settings.AUTO_ACCEPT_PRECISION,
        min_photos=settings.TRAINING_MIN_PHOTOS_PER_CATEGORY,
        min_support=settings.AUTO_ACCEPT_MIN_SUPPORT,
    )
    return train_candidate(
        data,
        mask,
        taxonomy=inference.taxonomy(),
        config=config,
        calibration=unbiased,
        log=lambda message: logger.info("run %s: %s", run_id, message),
    )


def _compare_with_active(
    *, run_id: int, version: TrainedVersion, candidate: Candidate, base: ImageClassifier
) -> str | None:
    """Compares the new version with the active one, if any; returns the active version's name
    when a comparison was recorded."""
    active = registry_selectors.model_version_active()
    if active is None or not candidate.held_out:
        return None
    try:
        compare(candidate=version, baseline=active, base=base, taxonomy=inference.taxonomy())
    except ValueError as error:
        logger.warning("run %s: no comparison with %s: %s", run_id, active.name, error)
        return None
    return active.name


def train(*, run_id: int, classifier: ImageClassifier | None = None) -> TrainedVersion | None:
    """Run training run `run_id` end to end (see the module docstring); returns the candidate
    version, or None when the run is gone or already finished. `classifier`: the serving
    classifier whose backbone and views are used (default: this worker's)."""
    run = training_run_start(run_id=run_id)
    if run is None:
        return None
    began = time.perf_counter()
    base = classifier or inference.base_classifier()
    photos = review_selectors.labelled_photos()
    outputs, computed = embed_missing(photos=photos, classifier=base)
    embedded = time.perf_counter()
    data, mask, unbiased = _labelled_outputs(photos, outputs)
    candidate = _candidate(run_id=run.pk, base=base, data=data, mask=mask, unbiased=unbiased)
    fitted = time.perf_counter()
    manifest, payload = candidate.head.to_bytes()
    version = model_version_register(
        name=f"{base.backbone_version}+{candidate.head.version}",
        backbone_version=base.backbone_version,
        head_manifest=manifest,
        head_npz=payload,
        metrics=candidate.metrics,
        hyperparameters={**candidate.head.hyperparameters, "excluded_categories": candidate.excluded},
        auto_accept_thresholds=candidate.auto_accept_thresholds,
        auto_accept_precision=candidate.auto_accept_precision,
        training_photos=candidate.training_photos,
        held_out_images=[[key, label] for key, label in candidate.held_out],
    )
    compared_with = _compare_with_active(run_id=run_id, version=version, candidate=candidate, base=base)
    finished = time.perf_counter()
    report: dict[str, Any] = {
        "photos": len(photos),
        "embedded": len(computed),
        "cached": len(photos) - len(computed),
        "training_photos": candidate.training_photos,
        "held_out_photos": len(candidate.held_out),
        "excluded_categories": candidate.excluded,
        "compared_with": compared_with,
        "seconds": {
            "embed": round(embedded - began, 2),
            **candidate.seconds,
            "train": round(fitted - embedded, 2),
            "total": round(finished - began, 2),
        },
    }
    training_run_finish(run=run, model_version=version, report=report)
    logger.info(
        json.dumps({"event": "model_trained", "run_id": run_id, "model_version": version.name, **report})
    )
    return version


_TRAINING = {
    **retry.policy().task_options(),
    "soft_time_limit": settings.TRAINING_SOFT_TIME_LIMIT_S,
    "time_limit": settings.TRAINING_HARD_TIME_LIMIT_S,
}


@app.task(name=TaskName.MODEL_TRAIN, bind=True, **_TRAINING)
def model_train_task(self: Any, run_id: int) -> str:
    """Train a candidate version for training run `run_id`. Returns an outcome word.

    Database, storage and broker errors are retried (`workers.retry`); when the retries run out,
    or on any other error, the run ends FAILED with a reason staff can read."""
    try:
        version = train(run_id=run_id)
    except Exception as error:
        if not retry.gave_up(self.request.retries, error):
            raise
        if isinstance(error, retry.RETRYABLE_ERRORS):
            attempts = retry.policy().max_retries + 1
            reason = TRAINING_UNAVAILABLE.format(attempts=attempts, error=retry.describe(error))
        else:  # a permanent failure: record it for staff
            logger.exception("training run %s failed", run_id)
            reason = str(error) or error.__class__.__name__
        training_run_fail(run_id=run_id, reason=reason)
        return "failed"
    return "gone" if version is None else "done"


@app.task(name=TaskName.MODEL_COMPARE, bind=True, **_TRAINING)
def model_compare_task(self: Any, version_id: int) -> str:
    """Compare version `version_id` with the active version on its held-out photos."""
    candidate = registry_selectors.model_version_get(version_id=version_id)
    active = registry_selectors.model_version_active()
    if candidate is None or active is None or active.pk == candidate.pk:
        return "nothing-to-compare"
    try:
        compare(
            candidate=candidate,
            baseline=active,
            base=inference.base_classifier(),
            taxonomy=inference.taxonomy(),
        )
    except ValueError as error:
        logger.warning("comparison of %s failed: %s", candidate.name, error)
        return "failed"
    return "done"
