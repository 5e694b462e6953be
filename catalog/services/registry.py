"""The model registry: training runs, trained versions, comparisons, activation and rollback.

The web process never trains or scores: it records a request and hands the work to the
`training` queue by task name (`workers.training`), after commit. Training and comparisons need
the `catalog.train_modelversion` permission (catalog.access). Activation needs
`catalog.activate_modelversion` and a comparison of the candidate with the active version on the
same held-out photos; rollback returns to the version the last activation replaced, without one
(it was active before).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from catalog.access import ACTIVATE_PERMISSION, TRAIN_PERMISSION
from catalog.activation import activation_objections
from catalog.models import (
    Category,
    ModelActivation,
    ModelComparison,
    ModelVersion,
    TrainingRun,
    TrainingStatus,
)
from catalog.queueing import enqueue_on_commit
from catalog.selectors import registry as registry_selectors
from catalog.tasks_contract import TaskName

if TYPE_CHECKING:
    from catalog.services.embeddings import EmbeddingRow

logger = logging.getLogger(__name__)


# User-facing messages; tests reuse them.
ACTIVATION_NEEDS_COMPARISON = (
    "Compare {candidate} with the active version {active} on the same held-out photos before activating it."
)
ALREADY_ACTIVE = "{version} is already the active version."
NOTHING_TO_ROLL_BACK = "There is no earlier active version to roll back to."
NOT_SERVABLE = "{version} has no head artifact, so no worker can serve it."
TRAINING_RUN_LOST = (
    "No worker started this run within {minutes} minutes of its request (its queue message was lost "
    "or no training worker ran); it was set aside. Request training again."
)
TRAINING_RUN_SUPERSEDED = (
    "A newer training request replaced this run, which no worker had started within {minutes} minutes."
)
TRAINING_RUN_STOPPED = (
    "This run stopped without finishing (its worker was lost past the {minutes}-minute time limit); "
    "request training again."
)


class RegistryRefused(ValueError):
    """A registry change that its rules refuse; `str(error)` is shown to staff."""


ACTIVATION_REFUSED = "{candidate} was not activated: {reasons}"


class ActivationRefused(RegistryRefused):
    """The candidate has objections (`catalog.activation`); `objections` lists them. Staff may
    still activate it by giving a written reason."""

    def __init__(self, candidate: str, objections: list[str]) -> None:
        super().__init__(ACTIVATION_REFUSED.format(candidate=candidate, reasons=" ".join(objections)))
        self.objections = objections


def _require_permission(user: AbstractBaseUser | None, permission: str) -> None:
    if user is None or not user.has_perm(permission):  # type: ignore[attr-defined]
        raise PermissionDenied(f"needs the permission {permission}")


def training_run_request(*, requested_by: AbstractBaseUser | None) -> TrainingRun:
    """Queue a training run on the `training` queue (after commit) and return its row.

    A run already queued or running is returned instead of a second one, unless it is stale
    (see `training_runs_sweep`): then it is set aside with its reason and a new run is queued.
    `requested_by=None` is the command line (`manage.py train`); a web user needs
    `catalog.train_modelversion` (else
    `PermissionDenied`).
    """
    if requested_by is not None:
        _require_permission(requested_by, TRAIN_PERMISSION)
    with transaction.atomic():
        _training_runs_set_aside(superseded=True)
        pending = (
            TrainingRun.objects.select_for_update()
            .filter(status__in=[TrainingStatus.QUEUED, TrainingStatus.RUNNING])
            .order_by("pk")
            .first()
        )
        if pending is not None:
            return pending
        run = TrainingRun.objects.create(requested_by_id=getattr(requested_by, "pk", None))
        enqueue_on_commit(TaskName.MODEL_TRAIN, args=[run.pk])
    return run


def training_runs_sweep() -> int:
    """Periodic sweeper: set aside training runs that will never finish, with a reason staff can
    read. A run QUEUED for longer than `STUCK_JOB_AFTER_S` lost its message (or no training
    worker runs); a run RUNNING for longer than the training hard time limit plus that much lost
    its worker. Failing them, rather than sending them again, keeps two workers from ever
    training the same run; the next request starts afresh. Returns how many were set aside."""
    with transaction.atomic():
        return _training_runs_set_aside(superseded=False)


def _training_runs_set_aside(*, superseded: bool) -> int:
    now = timezone.now()
    waited = timedelta(seconds=settings.STUCK_JOB_AFTER_S)
    ran = timedelta(seconds=settings.TRAINING_HARD_TIME_LIMIT_S + settings.STUCK_JOB_AFTER_S)
    minutes = round(settings.STUCK_JOB_AFTER_S / 60)
    queued = (TRAINING_RUN_SUPERSEDED if superseded else TRAINING_RUN_LOST).format(minutes=minutes)
    stopped = TRAINING_RUN_STOPPED.format(minutes=round(settings.TRAINING_HARD_TIME_LIMIT_S / 60))
    count = 0
    for status, since, reason in (
        (TrainingStatus.QUEUED, {"created_at__lt": now - waited}, queued),
        (TrainingStatus.RUNNING, {"started_at__lt": now - ran}, stopped),
    ):
        stale = TrainingRun.objects.select_for_update().filter(status=status, **since)
        for run_id in stale.values_list("pk", flat=True):
            logger.warning("training run %s set aside: %s", run_id, reason)
        count += stale.update(status=TrainingStatus.FAILED, failure_reason=reason, finished_at=now)
    return count


def training_run_start(*, run_id: int) -> TrainingRun | None:
    """Mark the run RUNNING (also on a redelivery of a run that was RUNNING when its worker died).

    Returns None when the run is gone or already finished, so a duplicate delivery does nothing.
    """
    updated = TrainingRun.objects.filter(
        pk=run_id, status__in=[TrainingStatus.QUEUED, TrainingStatus.RUNNING]
    ).update(status=TrainingStatus.RUNNING, started_at=timezone.now())
    return TrainingRun.objects.filter(pk=run_id).first() if updated else None


def training_run_finish(*, run: TrainingRun, model_version: ModelVersion, report: dict[str, Any]) -> None:
    """Record the run's outcome: the version it produced and its report (timings, counts)."""
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingStatus.DONE, model_version=model_version, report=report, finished_at=timezone.now()
    )


def training_run_fail(*, run_id: int, reason: str, report: dict[str, Any] | None = None) -> None:
    """Mark the run FAILED with a reason a person can read."""
    TrainingRun.objects.filter(pk=run_id).update(
        status=TrainingStatus.FAILED, failure_reason=reason, report=report or {}, finished_at=timezone.now()
    )


def model_version_register(
    *,
    name: str,
    backbone_version: str,
    head_manifest: dict[str, Any],
    head_npz: bytes,
    metrics: dict[str, Any],
    hyperparameters: dict[str, Any],
    auto_accept_thresholds: dict[str, float],
    auto_accept_precision: float | None,
    training_photos: int | None = None,
    held_out_images: list[list[Any]] | None = None,
) -> ModelVersion:
    """Store a version with its head artifact and evaluation, inactive (a candidate).

    Idempotent by `name`: a redelivered training task updates the same row.
    """
    held_out_images = held_out_images or []
    version, _ = ModelVersion.objects.update_or_create(
        name=name,
        defaults={
            "backbone_version": backbone_version,
            "head_manifest": head_manifest,
            "head_npz": head_npz,
            "metrics": metrics,
            "hyperparameters": hyperparameters,
            "auto_accept_thresholds": auto_accept_thresholds,
            "auto_accept_precision": auto_accept_precision,
            "training_photos": training_photos,
            "held_out_photos": len(held_out_images),
            "held_out_images": held_out_images,
        },
    )
    return version


def model_version_artifact_attach(
    *,
    version: ModelVersion,
    head_manifest: dict[str, Any],
    head_npz: bytes,
    metrics: dict[str, Any],
    auto_accept_thresholds: dict[str, float],
    auto_accept_precision: float | None,
) -> bool:
    """Give a version created by a worker (the shipped head) its artifact and evaluation, once.

    Returns False when the row already had an artifact (it is never replaced).
    """
    updated = ModelVersion.objects.filter(pk=version.pk, head_npz=b"").update(
        head_manifest=head_manifest,
        head_npz=head_npz,
        metrics=metrics,
        hyperparameters=head_manifest.get("hyperparameters", {}),
        training_photos=head_manifest.get("hyperparameters", {}).get("training_photos"),
        auto_accept_thresholds=auto_accept_thresholds,
        auto_accept_precision=auto_accept_precision,
    )
    return bool(updated)


def image_embeddings_store(*, backbone_version: str, rows: list[EmbeddingRow]) -> None:
    """Cache backbone outputs computed outside classification (e.g. by training): rows of
    (image id, embedding (1280,), logits (1000,)), written by the cache's one writer
    (`catalog.services.embeddings.embeddings_write`); photos deleted meanwhile are skipped."""
    from catalog.services.embeddings import embeddings_write

    embeddings_write(backbone_version=backbone_version, rows=rows)


def model_comparison_record(
    *,
    candidate: ModelVersion,
    baseline: ModelVersion,
    photos: int,
    candidate_accuracy: float,
    baseline_accuracy: float,
    details: dict[str, Any],
) -> ModelComparison:
    """Store the scores of two versions on the same held-out photos."""
    return ModelComparison.objects.create(
        candidate=candidate,
        baseline=baseline,
        photos=photos,
        candidate_accuracy=candidate_accuracy,
        baseline_accuracy=baseline_accuracy,
        details=details,
    )


def model_comparison_request(*, candidate: ModelVersion, requested_by: AbstractBaseUser) -> None:
    """Queue a comparison of `candidate` with the active version (after commit). Needs
    `catalog.train_modelversion` (else `PermissionDenied`)."""
    _require_permission(requested_by, TRAIN_PERMISSION)
    enqueue_on_commit(TaskName.MODEL_COMPARE, args=[candidate.pk])


def _activate(
    *,
    version: ModelVersion,
    actor: AbstractBaseUser,
    comparison: ModelComparison | None,
    is_rollback: bool,
    objections: list[str] | None = None,
    override_reason: str = "",
) -> ModelActivation:
    current = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    # One active version at most (a partial unique constraint): clear the old one first.
    ModelVersion.objects.filter(is_active=True).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    version.refresh_from_db()
    activation = ModelActivation.objects.create(
        model_version=version,
        previous=current,
        comparison=comparison,
        is_rollback=is_rollback,
        actor_id=actor.pk,
        objections=objections or [],
        override_reason=override_reason,
    )
    if objections:
        logger.warning(
            "model version %s activated by user %s despite %s objection(s): %s",
            version.name,
            actor.pk,
            len(objections),
            override_reason,
        )
    logger.info(
        "model version %s %s by user %s (was %s)",
        version.name,
        "rolled back to" if is_rollback else "activated",
        actor.pk,
        current.name if current else None,
    )
    return activation


def model_version_activate(
    *, version: ModelVersion, actor: AbstractBaseUser, override_reason: str = ""
) -> ModelActivation:
    """Make `version` the one workers serve.

    Needs the `catalog.activate_modelversion` permission (else `PermissionDenied`), a head
    artifact, and a comparison with the active version on the same held-out photos (else
    `RegistryRefused` with the message to show). A candidate the rules of `catalog.activation`
    object to (it drops a category with listings, or loses recall) raises `ActivationRefused`,
    unless `override_reason` says in words why to activate it anyway: the activation then keeps
    the reason and the objections (the registry's audit trail).
    """
    _require_permission(actor, ACTIVATE_PERMISSION)
    with transaction.atomic():
        active = ModelVersion.objects.select_for_update().filter(is_active=True).first()
        if active is not None and active.pk == version.pk:
            raise RegistryRefused(ALREADY_ACTIVE.format(version=version.name))
        if not bytes(version.head_npz or b""):
            raise RegistryRefused(NOT_SERVABLE.format(version=version.name))
        comparison = None
        if active is not None:
            comparison = (
                ModelComparison.objects.filter(candidate=version, baseline=active).order_by("-pk").first()
            )
            if comparison is None:
                raise RegistryRefused(
                    ACTIVATION_NEEDS_COMPARISON.format(candidate=version.name, active=active.name)
                )
        objections = (
            activation_objections(candidate=version, active=active, comparison=comparison)
            if active is not None
            else []
        )
        if objections and not override_reason.strip():
            raise ActivationRefused(version.name, objections)
        return _activate(
            version=version,
            actor=actor,
            comparison=comparison,
            is_rollback=False,
            objections=objections,
            override_reason=override_reason.strip() if objections else "",
        )


def model_version_rollback(*, actor: AbstractBaseUser) -> ModelActivation:
    """Return to the version the last activation replaced (one click; no comparison needed).

    Needs the `catalog.activate_modelversion` permission. Raises `RegistryRefused` with
    `NOTHING_TO_ROLL_BACK` when there is no earlier version.
    """
    _require_permission(actor, ACTIVATE_PERMISSION)
    with transaction.atomic():
        target = registry_selectors.model_rollback_target()
        if target is None:
            raise RegistryRefused(NOTHING_TO_ROLL_BACK)
        return _activate(version=target, actor=actor, comparison=None, is_rollback=True)


CATEGORY_NAME_NEEDED = "Give the category a name."
CATEGORY_SLUG_TAKEN = "A category with the slug {slug!r} already exists."


def category_add(*, name: str, slug: str = "", parent_id: int | None = None) -> Category:
    """Add a category to the tree (staff). The slug defaults to the slugified name. It has no
    ImageNet classes, so it is never suggested zero-shot: it joins the trained head once it has
    `TRAINING_MIN_PHOTOS_PER_CATEGORY` labelled photos. Raises `ValueError` with the message to
    show for a missing name, a taken slug or an unknown parent."""
    from django.utils.text import slugify

    name = name.strip()
    if not name:
        raise ValueError(CATEGORY_NAME_NEEDED)
    slug = slugify(slug.strip() or name)[:64]
    if not slug:
        raise ValueError(CATEGORY_NAME_NEEDED)
    parent = None
    if parent_id is not None:
        parent = Category.objects.filter(pk=parent_id).first()
        if parent is None:
            raise ValueError("Choose a parent from the list.")
    with transaction.atomic():
        if Category.objects.select_for_update().filter(slug=slug).exists():
            raise ValueError(CATEGORY_SLUG_TAKEN.format(slug=slug))
        return Category.objects.create(slug=slug, name=name, parent=parent)
