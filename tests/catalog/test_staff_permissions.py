"""Staff rights by name: being staff opens nothing on its own; the "reviewer" and "model manager"
groups (created by a migration) open the review pages, the registry and the bulk job actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks

from catalog.access import (
    MODEL_MANAGER_GROUP,
    REVIEWER_GROUP,
    STAFF_GROUPS,
)
from catalog.admin import BULK_APPLY_NEEDS_PERMISSION
from catalog.models import (
    BulkJob,
    BulkJobStatus,
    Category,
    CategoryDecision,
    CategorySource,
    Listing,
    ModelActivation,
    ModelVersion,
    TrainingRun,
)
from catalog.views.staff import PERMISSION_NEEDED
from tests.catalog.review_helpers import classified_listing, staff_user
from tests.factories import BulkJobFactory, ModelComparisonFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

FORM = {"rank": 1, "category": 1, "threshold": 0, "name": "Scarves"}


def _setup() -> dict[str, object]:
    """Two undecided listings scored by the active version, and a compared candidate."""
    active = ModelVersionFactory.create(name="active", is_active=True)
    first, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active, seed=1)
    classified_listing([("hat", 0.7), ("shoes", 0.2)], model_version=active, seed=2)
    candidate = ModelVersionFactory.create(name="candidate")
    ModelComparisonFactory.create(candidate=candidate, baseline=active)
    return {"active": active, "listing": first, "candidate": candidate}


def _review_urls(rows: dict[str, object]) -> list[tuple[str, str]]:
    listing = rows["listing"]
    return [
        ("get", reverse("catalog:review")),
        ("get", reverse("catalog:listing-audit", args=[listing.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:review-accept", args=[listing.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:review-correct", args=[listing.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:review-reject", args=[listing.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:review-bulk-accept")),
    ]


def _registry_urls(rows: dict[str, object]) -> list[tuple[str, str]]:
    candidate = rows["candidate"]
    return [
        ("get", reverse("catalog:registry")),
        ("get", reverse("catalog:model-version", args=[candidate.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:training-start")),
        ("post", reverse("catalog:model-compare", args=[candidate.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:model-activate", args=[candidate.pk])),  # type: ignore[attr-defined]
        ("post", reverse("catalog:model-rollback")),
        ("post", reverse("catalog:category-add")),
    ]


def _state() -> tuple[object, ...]:
    """Everything a staff page could change."""
    return (
        CategoryDecision.objects.count(),
        Listing.objects.exclude(category_source=CategorySource.NONE).count(),
        TrainingRun.objects.count(),
        Category.objects.count(),
        ModelActivation.objects.count(),
        ModelVersion.objects.get(is_active=True).name,
    )


def _visit(client: Client, urls: list[tuple[str, str]]) -> list[int]:
    return [getattr(client, method)(url, FORM).status_code for method, url in urls]


def test_the_migration_creates_both_groups_with_their_permissions() -> None:
    for name, permissions in STAFF_GROUPS.items():
        granted = {
            f"{app}.{codename}"
            for app, codename in Group.objects.get(name=name).permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        assert granted == set(permissions), name


def test_staff_without_permissions_get_403_everywhere_and_change_nothing(
    client: Client, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    # given every staff page, and a staff member in no group
    rows = _setup()
    before = _state()
    client.force_login(staff_user("nobody"))

    # when they open or post to each (bulk accept at 0 %, training, a category, activation)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        statuses = _visit(client, _review_urls(rows) + _registry_urls(rows))

    # then every one answers 403 with the reason, and nothing changed or was queued
    assert statuses == [403] * len(statuses)
    assert PERMISSION_NEEDED in client.get(reverse("catalog:review")).content.decode()
    assert _state() == before
    assert queued == []


def test_a_reviewer_reviews_and_bulk_accepts_but_cannot_touch_models(client: Client) -> None:
    # given a reviewer
    rows = _setup()
    client.force_login(staff_user("rita", groups=[REVIEWER_GROUP]))

    # when they open the queue, accept a listing, bulk-accept the rest at 50 %
    queue = client.get(reverse("catalog:review"))
    accept = client.post(reverse("catalog:review-accept", args=[rows["listing"].pk]), {"rank": 1})  # type: ignore[attr-defined]
    bulk = client.post(reverse("catalog:review-bulk-accept"), {"threshold": 50})
    after_review = _state()

    # then both work, and every registry page answers 403 without changing anything
    assert (queue.status_code, accept.status_code, bulk.status_code) == (200, 302, 302)
    assert "Bulk accept" in queue.content.decode()
    assert CategoryDecision.objects.count() == 2
    assert _visit(client, _registry_urls(rows)) == [403] * len(_registry_urls(rows))
    assert _state() == after_review


def test_a_model_manager_trains_activates_and_adds_categories_but_cannot_review(
    client: Client, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    # given a model manager
    rows = _setup()
    client.force_login(staff_user("mo", groups=[MODEL_MANAGER_GROUP]))

    # when they open the registry, start training, add a category and activate the candidate
    registry = client.get(reverse("catalog:registry"))
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("catalog:training-start"))
    client.post(reverse("catalog:category-add"), {"name": "Scarves"})
    client.post(reverse("catalog:model-activate", args=[rows["candidate"].pk]))  # type: ignore[attr-defined]

    # then each took effect
    assert registry.status_code == 200
    assert "Train a new version" in registry.content.decode()
    assert TrainingRun.objects.count() == 1
    assert Category.objects.filter(slug="scarves").exists()
    assert ModelVersion.objects.get(is_active=True).name == "candidate"
    # and the review pages answer 403 without a decision
    assert _visit(client, _review_urls(rows)) == [403] * len(_review_urls(rows))
    assert CategoryDecision.objects.filter(source=CategorySource.REVIEWER).count() == 0


def test_pages_offer_only_the_actions_a_person_may_take(client: Client) -> None:
    # given a reviewer who may review but not bulk-accept, and the registry's viewers
    rows = _setup()
    reviewer = staff_user("rita", groups=[REVIEWER_GROUP])
    reviewer.groups.get(name=REVIEWER_GROUP).permissions.remove(
        Permission.objects.get(codename="bulk_accept_listing")
    )
    viewer = staff_user("vera")
    viewer.user_permissions.add(Permission.objects.get(codename="view_modelversion"))

    # when each opens their page
    client.force_login(reviewer)
    queue = client.get(reverse("catalog:review")).content.decode()
    client.force_login(viewer)
    registry = client.get(reverse("catalog:registry")).content.decode()
    detail = client.get(reverse("catalog:model-version", args=[rows["candidate"].pk])).content.decode()  # type: ignore[attr-defined]

    # then no form is offered that would answer 403
    assert "data-bulk-accept" not in queue and "Review queue" in queue
    assert "Train a new version" not in registry and "Add a category" not in registry
    assert "data-activate=" not in registry and "Compare with" not in registry + detail
    assert "Review queue" not in registry


# --- bulk jobs in the admin ---------------------------------------------------------------------


def _job(status: str = BulkJobStatus.RUNNING, *, dry_run: bool = False) -> BulkJob:
    active = ModelVersion.objects.filter(is_active=True).first() or ModelVersionFactory.create(
        name="active", is_active=True
    )
    return BulkJobFactory.create(model_version=active, status=status, dry_run=dry_run, planning_done=True)


ACTIONS = ["cancel_jobs", "resume_jobs", "retry_failed_photos", "apply_dry_runs"]


def test_bulk_actions_are_not_run_for_staff_who_may_only_view_jobs(client: Client) -> None:
    # given a running job, a finished dry run, and staff with only the view permission
    running = _job()
    dry_run = _job(BulkJobStatus.DONE, dry_run=True)
    viewer = staff_user("vic")
    viewer.user_permissions.add(Permission.objects.get(codename="view_bulkjob"))
    client.force_login(viewer)

    # when they post each of the four actions on both jobs
    page = client.get("/admin/catalog/bulkjob/").content.decode()
    selected = [running.pk, dry_run.pk]
    for action in ACTIONS:
        client.post("/admin/catalog/bulkjob/", {"action": action, "_selected_action": selected})

    # then none is offered, none ran, and no job was started
    assert not any(f'value="{action}"' in page for action in ACTIONS)
    assert BulkJob.objects.count() == 2
    assert BulkJob.objects.get(pk=running.pk).status == BulkJobStatus.RUNNING


def test_a_model_manager_runs_bulk_actions_and_only_they_may_write_suggestions(
    client: Client, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    # given a running job and a finished dry run
    running = _job()
    dry_run = _job(BulkJobStatus.DONE, dry_run=True)

    # when staff who may start jobs but not apply them ask for a job that is not a dry run
    starter = staff_user("sam")
    starter.user_permissions.add(*Permission.objects.filter(codename__in=["view_bulkjob", "add_bulkjob"]))
    client.force_login(starter)
    model_version = ModelVersion.objects.get(is_active=True).pk
    refused = client.post("/admin/catalog/bulkjob/add/", {"model_version": model_version, "chunk_size": 500})

    # then it is refused with the reason
    assert BULK_APPLY_NEEDS_PERMISSION in refused.content.decode()
    assert BulkJob.objects.count() == 2

    # when a model manager offers the actions, cancels the running job and applies the dry run
    client.force_login(staff_user("mo", groups=[MODEL_MANAGER_GROUP]))
    page = client.get("/admin/catalog/bulkjob/").content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        client.post("/admin/catalog/bulkjob/", {"action": "cancel_jobs", "_selected_action": [running.pk]})
        client.post("/admin/catalog/bulkjob/", {"action": "apply_dry_runs", "_selected_action": [dry_run.pk]})

    # then all four are offered, the job is cancelled and an apply job started from the dry run
    assert all(f'value="{action}"' in page for action in ACTIONS)
    assert BulkJob.objects.get(pk=running.pk).status == BulkJobStatus.CANCELLED
    applied = BulkJob.objects.exclude(pk__in=[running.pk, dry_run.pk]).get()
    assert (applied.source_job_id, applied.dry_run) == (dry_run.pk, False)
