"""Staff pages of the model registry: versions side by side, a version's evaluation (with its
confusion matrix and reliability diagram as PNG), training, comparison, activation, rollback,
and adding a category to the tree.

Training and comparison run on the `training` queue; these views only record the request.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from catalog import charts
from catalog.access import (
    ACTIVATE_PERMISSION,
    CATEGORY_ADD_PERMISSION,
    REGISTRY_VIEW_PERMISSION,
    TRAIN_PERMISSION,
)
from catalog.activation import activation_objections
from catalog.models import ModelComparison, ModelVersion
from catalog.selectors import catalogue as catalogue_selectors
from catalog.selectors import registry as registry_selectors
from catalog.selectors import review as review_selectors
from catalog.services import registry as registry_services
from catalog.services.registry import ActivationRefused, RegistryRefused
from catalog.views.requests import SignedInRequest
from catalog.views.staff import staff_required

# User-facing messages; tests reuse them.
TRAINING_QUEUED = "Training run {run} is queued; a new version appears here when it finishes."
COMPARISON_QUEUED = "Comparing {version} with the active version; reload in a moment."
ACTIVATED = "{version} is now active; workers switch to it within {seconds:g} s."
ROLLED_BACK = "Rolled back to {version}."
CATEGORY_ADDED = "Added {path}. It joins training once it has {minimum} labelled photos."
OVERRIDE_NEEDS_CONFIRMATION = "Tick the box to confirm that you activate it despite the objections."
NO_THRESHOLD = (
    "No threshold: on held-out photos this category's precision could not be shown to reach the "
    "target, so its suggestions wait for a person."
)


def _version(pk: int) -> ModelVersion:
    version = registry_selectors.model_version_get(version_id=pk)
    if version is None:
        raise Http404("no such model version")
    return version


def _row(version: ModelVersion, active: ModelVersion | None) -> dict[str, object]:
    metrics = version.metrics or {}
    held_out = metrics.get("held_out") or {}
    auto = held_out.get("auto_accept") or {}
    comparison = registry_selectors.model_comparison_with_active(version=version) if active else None
    objections = (
        activation_objections(candidate=version, active=active, comparison=comparison)
        if active is not None and comparison is not None and not version.is_active
        else []
    )
    return {
        "objections": objections,
        "version": version,
        "held_out": held_out,
        "auto": auto,
        "thresholds": len(version.auto_accept_thresholds or {}),
        "comparison": comparison,
        "can_activate": not version.is_active and (active is None or comparison is not None),
        "trained": bool(version.hyperparameters),
    }


@staff_required(REGISTRY_VIEW_PERMISSION)
@require_GET
def registry(request: SignedInRequest) -> HttpResponse:
    """Every version side by side with its held-out figures; training runs and activations."""
    versions = list(registry_selectors.model_versions())
    active = next((v for v in versions if v.is_active), None)
    context = {
        "rows": [_row(version, active) for version in versions],
        "active": active,
        "runs": registry_selectors.training_runs(),
        "activations": registry_selectors.model_activations(),
        "rollback_to": registry_selectors.model_rollback_target(),
        "can_activate": request.user.has_perm(ACTIVATE_PERMISSION),
        "label_counts": review_selectors.labelled_photo_counts(),
        "minimum": settings.TRAINING_MIN_PHOTOS_PER_CATEGORY,
        "held_out_percent": f"{settings.TRAINING_HELD_OUT_PERCENT} %",
        "tree": catalogue_selectors.category_tree(),
    }
    return render(request, "catalog/staff/registry.html", context)


@staff_required(REGISTRY_VIEW_PERMISSION)
@require_GET
def model_version_detail(request: SignedInRequest, pk: int) -> HttpResponse:
    """One version: data size, hyperparameters, held-out metrics, thresholds, comparisons."""
    version = _version(pk)
    metrics = version.metrics or {}
    held_out = metrics.get("held_out") or {}
    thresholds = sorted((version.auto_accept_thresholds or {}).items())
    active = ModelVersion.objects.filter(is_active=True).only("pk", "name", "head_manifest").first()
    comparison = registry_selectors.model_comparison_with_active(version=version)
    objections = []
    if active is not None and comparison is not None and not version.is_active:
        objections = activation_objections(candidate=version, active=active, comparison=comparison)
    context = {
        "version": version,
        "held_out": held_out,
        "per_category": sorted((held_out.get("per_category") or {}).items()),
        "thresholds": thresholds,
        "no_threshold": NO_THRESHOLD,
        "other_metrics": {key: value for key, value in metrics.items() if key != "held_out"},
        "comparisons": version.comparisons.select_related("baseline").order_by("-created_at")[:10],
        "comparison": comparison,
        "can_activate": request.user.has_perm(ACTIVATE_PERMISSION),
        "active": active,
        "objections": objections,
        **_recall_rows(comparison),
    }
    return render(request, "catalog/staff/model_version.html", context)


def _recall_rows(comparison: ModelComparison | None) -> dict[str, object]:
    """Per-category recall of a comparison, worst change first, and the categories it lacks."""
    details = (comparison.details if comparison else None) or {}
    rows = [
        {
            "slug": slug,
            "photos": row.get("photos"),
            "candidate": row.get("candidate"),
            "baseline": row.get("baseline"),
            "points": 100 * (float(row.get("candidate") or 0) - float(row.get("baseline") or 0)),
        }
        for slug, row in (details.get("recall_by_category") or {}).items()
    ]
    rows.sort(key=lambda row: (row["points"], row["slug"]))
    return {"recall_rows": rows, "uncovered": details.get("uncovered") or []}


@staff_required(REGISTRY_VIEW_PERMISSION)
@require_GET
@cache_control(private=True, max_age=300)
def confusion_chart(request: SignedInRequest, pk: int) -> HttpResponse:
    confusion = ((_version(pk).metrics or {}).get("held_out") or {}).get("confusion")
    if not confusion:
        raise Http404("no confusion matrix for this version")
    return HttpResponse(
        charts.confusion_png(confusion["classes"], confusion["matrix"]), content_type="image/png"
    )


@staff_required(REGISTRY_VIEW_PERMISSION)
@require_GET
@cache_control(private=True, max_age=300)
def reliability_chart(request: SignedInRequest, pk: int) -> HttpResponse:
    held_out = (_version(pk).metrics or {}).get("held_out") or {}
    if not held_out.get("reliability"):
        raise Http404("no reliability diagram for this version")
    return HttpResponse(
        charts.reliability_png(held_out["reliability"], held_out.get("ece")), content_type="image/png"
    )


@staff_required(TRAIN_PERMISSION)
@require_POST
def training_start(request: SignedInRequest) -> HttpResponse:
    """Queue a training run on the human-labelled photos."""
    run = registry_services.training_run_request(requested_by=request.user)
    messages.success(request, TRAINING_QUEUED.format(run=run.pk))
    return redirect("catalog:registry")


@staff_required(TRAIN_PERMISSION)
@require_POST
def model_version_compare(request: SignedInRequest, pk: int) -> HttpResponse:
    """Queue a comparison of the version with the active one on the version's held-out photos."""
    version = _version(pk)
    registry_services.model_comparison_request(candidate=version, requested_by=request.user)
    messages.success(request, COMPARISON_QUEUED.format(version=version.name))
    return redirect("catalog:model-version", pk=version.pk)


@staff_required(ACTIVATE_PERMISSION)
@require_POST
def model_version_activate(request: SignedInRequest, pk: int) -> HttpResponse:
    """Make the version active, once compared with the active one. A version the registry's
    rules object to is activated only with a written reason and the confirmation box ticked;
    otherwise its page shows the objections."""
    version = _version(pk)
    reason = request.POST.get("override_reason", "").strip()
    if reason and request.POST.get("confirm") != "yes":
        messages.error(request, OVERRIDE_NEEDS_CONFIRMATION)
        return redirect("catalog:model-version", pk=version.pk)
    try:
        registry_services.model_version_activate(version=version, actor=request.user, override_reason=reason)
    except ActivationRefused as error:
        messages.error(request, str(error))
        return redirect(reverse("catalog:model-version", kwargs={"pk": version.pk}) + "#activation")
    except RegistryRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, ACTIVATED.format(version=version.name, seconds=settings.ACTIVE_MODEL_CHECK_S)
        )
    return redirect("catalog:registry")


@staff_required(ACTIVATE_PERMISSION)
@require_POST
def model_version_rollback(request: SignedInRequest) -> HttpResponse:
    """Return to the version the last activation replaced."""
    try:
        activation = registry_services.model_version_rollback(actor=request.user)
    except RegistryRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, ROLLED_BACK.format(version=activation.model_version.name))
    return redirect("catalog:registry")


@staff_required(CATEGORY_ADD_PERMISSION)
@require_POST
def category_add(request: SignedInRequest) -> HttpResponse:
    """Add a category to the tree (name, optional slug, optional parent)."""
    try:
        category = registry_services.category_add(
            name=request.POST.get("name", ""),
            slug=request.POST.get("slug", ""),
            parent_id=int(request.POST["parent"]) if request.POST.get("parent", "").isdigit() else None,
        )
    except ValueError as error:
        messages.error(request, str(error))
    else:
        path = catalogue_selectors.category_paths().get(category.pk, category.name)
        messages.success(
            request, CATEGORY_ADDED.format(path=path, minimum=settings.TRAINING_MIN_PHOTOS_PER_CATEGORY)
        )
    return redirect("catalog:registry")
