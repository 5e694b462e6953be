"""Reads of the model registry: model versions, their comparisons, activations and training runs."""

from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import ModelActivation, ModelComparison, ModelVersion, TrainingRun


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_by_name(*, name: str) -> ModelVersion | None:
    """The version called `name`; "active" names the active one."""
    if name == "active":
        return model_version_active()
    return ModelVersion.objects.filter(name=name).first()


def model_version_active_name() -> tuple[int, str] | None:
    """The active version's (id, name), or None (one indexed query, no artifact bytes)."""
    return ModelVersion.objects.filter(is_active=True).values_list("pk", "name").first()


def model_version_servable(*, version_id: int) -> ModelVersion | None:
    """The version with its head artifact, for a worker to serve it."""
    return ModelVersion.objects.filter(pk=version_id).first()


def model_version_has_artifact(*, name: str) -> bool:
    """Whether the version called `name` exists with its head artifact."""
    return ModelVersion.objects.filter(name=name).exclude(head_npz=b"").exists()


def model_versions() -> QuerySet[ModelVersion]:
    """Every model version, newest first, without the artifact bytes."""
    return ModelVersion.objects.defer("head_npz", "held_out_images").order_by("-created_at", "-id")


def model_version_get(*, version_id: int) -> ModelVersion | None:
    return ModelVersion.objects.defer("head_npz").filter(pk=version_id).first()


def model_comparison_with_active(*, version: ModelVersion) -> ModelComparison | None:
    """The latest comparison of `version` with the version active now, if any."""
    active = ModelVersion.objects.filter(is_active=True).only("pk").first()
    if active is None:
        return None
    return ModelComparison.objects.filter(candidate=version, baseline=active).order_by("-pk").first()


def model_rollback_target() -> ModelVersion | None:
    """The version the last activation of the active version replaced, if any."""
    active = ModelVersion.objects.filter(is_active=True).only("pk").first()
    if active is None:
        return None
    last = ModelActivation.objects.filter(model_version=active).select_related("previous").first()
    return last.previous if last is not None else None


def model_activations(*, limit: int = 10) -> QuerySet[ModelActivation]:
    return ModelActivation.objects.select_related("model_version", "previous", "actor").order_by(
        "-created_at", "-id"
    )[:limit]


def training_runs(*, limit: int = 10) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("requested_by", "model_version").order_by("-created_at")[:limit]
