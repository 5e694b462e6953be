"""The model registry: training requests, activation only after a comparison, rollback, charts."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks

from catalog.access import MODEL_MANAGER_GROUP
from catalog.models import (
    Category,
    ModelActivation,
    ModelComparison,
    ModelVersion,
    TrainingRun,
    TrainingStatus,
)
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.registry import (
    ACTIVATION_NEEDS_COMPARISON,
    RegistryRefused,
    category_add,
    model_comparison_record,
    model_version_activate,
    model_version_rollback,
    training_run_request,
)
from catalog.views import registry as registry_views
from tests.catalog.review_helpers import staff_user
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def _compare(candidate: ModelVersion, baseline: ModelVersion) -> ModelComparison:
    return model_comparison_record(
        candidate=candidate,
        baseline=baseline,
        photos=50,
        candidate_accuracy=0.94,
        baseline_accuracy=0.91,
        details={},
    )


def test_training_is_queued_after_commit_once(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    # given a model manager
    user = staff_user(groups=[MODEL_MANAGER_GROUP])

    # when they ask for training twice
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = training_run_request(requested_by=user)
        second = training_run_request(requested_by=user)

    # then one run is queued, and one task is published after commit
    assert first.pk == second.pk
    assert TrainingRun.objects.get().status == TrainingStatus.QUEUED
    assert len(callbacks) == 1
    # and a seller may not ask
    with pytest.raises(PermissionDenied):
        training_run_request(requested_by=UserFactory.create())


def test_the_training_task_is_routed_to_the_training_queue() -> None:
    from catalog.tasks_contract import Queue, TaskName
    from config.celery import app

    # then the names the catalogue sends go to the training queue
    assert app.conf.task_routes[TaskName.MODEL_TRAIN] == {"queue": Queue.TRAINING.value}
    assert app.conf.task_routes[TaskName.MODEL_COMPARE] == {"queue": Queue.TRAINING.value}


def test_activation_needs_a_comparison_with_the_active_version() -> None:
    # given an active version and a candidate, and staff allowed to activate
    active = ModelVersionFactory.create(name="active", is_active=True)
    candidate = ModelVersionFactory.create(name="candidate")
    user = staff_user(can_activate=True)

    # when staff activate before any comparison
    with pytest.raises(RegistryRefused) as refused:
        model_version_activate(version=candidate, actor=user)

    # then it is refused with the reason, and nothing changed
    assert str(refused.value) == ACTIVATION_NEEDS_COMPARISON.format(candidate="candidate", active="active")
    assert ModelVersion.objects.get(is_active=True) == active

    # when compared with an older version only, it is still refused
    _compare(candidate, ModelVersionFactory.create(name="older"))
    with pytest.raises(RegistryRefused):
        model_version_activate(version=candidate, actor=user)

    # when compared with the active one, activation works and is recorded
    comparison = _compare(candidate, active)
    activation = model_version_activate(version=candidate, actor=user)
    assert ModelVersion.objects.get(is_active=True) == candidate
    assert (activation.previous, activation.comparison, activation.actor) == (active, comparison, user)


def test_activation_is_a_permission_of_its_own() -> None:
    # given a compared candidate and a staff user without the permission
    active = ModelVersionFactory.create(name="active", is_active=True)
    candidate = ModelVersionFactory.create(name="candidate")
    _compare(candidate, active)

    # then that staff user may not activate
    with pytest.raises(PermissionDenied):
        model_version_activate(version=candidate, actor=staff_user())
    assert ModelVersion.objects.get(is_active=True) == active


def test_rollback_returns_to_the_version_the_last_activation_replaced() -> None:
    # given v1 active, then v2 activated after a comparison
    v1 = ModelVersionFactory.create(name="v1", is_active=True)
    v2 = ModelVersionFactory.create(name="v2")
    _compare(v2, v1)
    user = staff_user(can_activate=True)
    model_version_activate(version=v2, actor=user)

    # when staff roll back
    rollback = model_version_rollback(actor=user)

    # then v1 is active again, recorded as a rollback
    assert ModelVersion.objects.get(is_active=True) == v1
    assert (rollback.model_version, rollback.previous, rollback.is_rollback) == (v1, v2, True)
    assert ModelActivation.objects.count() == 2


def test_rollback_without_history_is_refused() -> None:
    ModelVersionFactory.create(name="only", is_active=True)
    with pytest.raises(RegistryRefused, match="no earlier"):
        model_version_rollback(actor=staff_user(can_activate=True))


def test_registry_page_shows_versions_side_by_side_and_activates(client: Client) -> None:
    # given an active version and a compared candidate with held-out figures
    active = ModelVersionFactory.create(name="lite0+shipped", is_active=True)
    candidate = ModelVersionFactory.create(name="lite0+trained-1")
    ModelVersion.objects.filter(pk=candidate.pk).update(
        metrics={
            "held_out": {
                "accuracy": 0.9312,
                "macro_f1": 0.92,
                "ece": 0.031,
                "auto_accept": {"photos": 100, "coverage": 0.71, "precision": 0.98},
            }
        },
        training_photos=2900,
        held_out_photos=500,
    )
    _compare(candidate, active)
    client.force_login(staff_user(groups=[MODEL_MANAGER_GROUP]))

    # when staff open the registry and press Activate
    page = client.get(reverse("catalog:registry")).content.decode()
    response = client.post(reverse("catalog:model-activate", args=[candidate.pk]), follow=True)

    # then both versions are listed with their figures, and the candidate becomes active
    assert 'data-version="lite0+shipped"' in page and 'data-version="lite0+trained-1"' in page
    assert "0.931" in page and "0.71 / 0.980" in page
    assert 'data-activate="lite0+trained-1"' in page
    assert response.status_code == 200
    assert ModelVersion.objects.get(is_active=True) == candidate


def test_an_uncompared_candidate_offers_compare_not_activate(client: Client) -> None:
    # given an active version and an uncompared candidate
    ModelVersionFactory.create(name="active", is_active=True)
    candidate = ModelVersionFactory.create(name="candidate")
    client.force_login(staff_user(groups=[MODEL_MANAGER_GROUP]))

    # when staff open the registry, and post activate anyway
    page = client.get(reverse("catalog:registry")).content.decode()
    client.post(reverse("catalog:model-activate", args=[candidate.pk]))

    # then only "Compare" is offered and the post changed nothing
    assert "data-activate=" not in page
    assert "Compare with active" in page
    assert not ModelVersion.objects.get(pk=candidate.pk).is_active


def test_a_version_page_serves_its_confusion_matrix_and_reliability_diagram(client: Client) -> None:
    # given a version with held-out figures
    trained = ModelVersionFactory.create(name="trained")
    ModelVersion.objects.filter(pk=trained.pk).update(
        metrics={
            "held_out": {
                "n": 4,
                "accuracy": 0.75,
                "ece": 0.1,
                "per_category": {"hat": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}},
                "confusion": {"classes": ["hat", "shoes"], "matrix": [[1, 1, 0], [0, 2, 0]]},
                "reliability": [
                    {
                        "lower": i / 10,
                        "upper": (i + 1) / 10,
                        "count": 1 if i == 9 else 0,
                        "confidence": 0.95,
                        "accuracy": 1.0,
                    }
                    for i in range(10)
                ],
            }
        },
        auto_accept_thresholds={"hat": 0.93},
    )
    client.force_login(staff_user(groups=[MODEL_MANAGER_GROUP]))

    # when staff open the version page and its two charts
    page = client.get(reverse("catalog:model-version", args=[trained.pk])).content.decode()
    confusion = client.get(reverse("catalog:model-confusion", args=[trained.pk]))
    reliability = client.get(reverse("catalog:model-reliability", args=[trained.pk]))

    # then the page shows the figures and both charts are PNG images
    assert "0.750" in page and "0.930" in page
    for chart in (confusion, reliability):
        assert chart.status_code == 200
        assert chart["Content-Type"] == "image/png"
        assert chart.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_staff_add_a_category_that_training_will_pick_up() -> None:
    # given the fashion branch
    fashion = Category.objects.get(slug="fashion")

    # when staff add "Scarves" under it
    scarves = category_add(name="Scarves", parent_id=fashion.pk)

    # then it is in the tree, with no ImageNet classes, and its slug cannot be taken twice
    assert (scarves.slug, scarves.parent, scarves.imagenet_ids) == ("scarves", fashion, [])
    assert any(entry["slug"] == "scarves" for entry in catalogue_selectors.taxonomy_entries())
    with pytest.raises(ValueError, match="already exists"):
        category_add(name="Scarves")


def test_a_version_page_states_its_target_and_which_categories_wait_for_people(client: Client) -> None:
    # given a version whose held-out auto-accept figures were recorded without a target precision,
    # and a threshold for one of its two categories
    recorded = ModelVersionFactory.create(name="recorded")
    ModelVersion.objects.filter(pk=recorded.pk).update(
        metrics={
            "held_out": {
                "n": 4,
                "accuracy": 0.75,
                "per_category": {
                    "hat": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
                    "shoes": {"precision": 0.67, "recall": 1.0, "f1": 0.8, "support": 2},
                },
                "auto_accept": {"photos": 4, "accepted": 1, "correct": 1, "coverage": 0.25, "precision": 1.0},
            }
        },
        auto_accept_thresholds={"hat": 0.93},
        auto_accept_precision=None,
    )
    client.force_login(staff_user(groups=[MODEL_MANAGER_GROUP]))

    # when staff open the version page
    page = client.get(reverse("catalog:model-version", args=[recorded.pk])).content.decode()

    # then no empty target is printed, and the category without a threshold says people decide
    assert "target precision )" not in page and "target precision" not in page
    assert "never" not in page
    assert "people decide" in page and registry_views.NO_THRESHOLD.split(":")[0] in page

    # and with a target recorded, it is printed
    ModelVersion.objects.filter(pk=recorded.pk).update(auto_accept_precision=0.97)
    page = client.get(reverse("catalog:model-version", args=[recorded.pk])).content.decode()
    assert "(target precision 0.97)" in page
