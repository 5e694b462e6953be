"""Staff rights by name.

Every staff page and admin action checks one of the permissions below, never `is_staff` alone.
Two groups bundle them ("reviewer", "model manager"); a data migration creates them and
`staff_groups_ensure` adds any permission a group is missing (idempotent). Being staff only lets
a person into the admin and the staff pages; what they may do there comes from these groups.
"""

from __future__ import annotations

from typing import Any

# Review pages: the queue, accept / correct / reject, a listing's audit trail.
REVIEW_PERMISSION = "catalog.review_listing"
# Accepting the first suggestion of every listing in a filter above a confidence, in one click.
BULK_ACCEPT_PERMISSION = "catalog.bulk_accept_listing"
# The model registry's pages (versions, figures, charts): Django's own view permission.
REGISTRY_VIEW_PERMISSION = "catalog.view_modelversion"
# Training runs and comparisons with the active version (work on the `training` queue).
TRAIN_PERMISSION = "catalog.train_modelversion"
# Activation and rollback: which version every worker serves.
ACTIVATE_PERMISSION = "catalog.activate_modelversion"
# Adding a category to the tree: Django's own add permission, the same right the admin checks,
# so there is one permission for one action whichever page it is done from.
CATEGORY_ADD_PERMISSION = "catalog.add_category"
# Bulk reclassification jobs in the admin: cancel, resume, retry failed photos.
BULK_RUN_PERMISSION = "catalog.run_bulkjob"
# Writing suggestions for the whole catalogue: applying a dry run, or starting a job that is not one.
BULK_APPLY_PERMISSION = "catalog.apply_bulkjob"

REVIEWER_GROUP = "reviewer"
MODEL_MANAGER_GROUP = "model manager"
STAFF_GROUPS: dict[str, tuple[str, ...]] = {
    REVIEWER_GROUP: (
        REVIEW_PERMISSION,
        BULK_ACCEPT_PERMISSION,
        "catalog.view_listing",
        "catalog.view_categorydecision",
    ),
    MODEL_MANAGER_GROUP: (
        REGISTRY_VIEW_PERMISSION,
        TRAIN_PERMISSION,
        ACTIVATE_PERMISSION,
        CATEGORY_ADD_PERMISSION,
        "catalog.view_category",
        "catalog.view_trainingrun",
        "catalog.view_modelcomparison",
        "catalog.view_bulkjob",
        "catalog.add_bulkjob",
        BULK_RUN_PERMISSION,
        BULK_APPLY_PERMISSION,
    ),
}


def staff_groups_ensure(group_model: Any, permission_model: Any) -> None:
    """Create the groups of `STAFF_GROUPS` and give each its permissions (adds, never removes, so
    a permission an administrator granted a group by hand stays).

    Takes the model classes so the data migration can pass its historical models. Raises
    `LookupError` naming a permission that does not exist (a typo, or a model's Meta changed).
    """
    for name, permissions in STAFF_GROUPS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        rows = []
        for dotted in permissions:
            app_label, codename = dotted.split(".", 1)
            rows_found = permission_model.objects.filter(content_type__app_label=app_label, codename=codename)
            row = rows_found.first()
            if row is None:
                raise LookupError(f"no permission {dotted!r} for the group {name!r}")
            rows.append(row)
        group.permissions.add(*rows)
