"""Whether a candidate model version may replace the active one: the registry's objections.

Two rules, read from the comparison of both versions on the same held-out photos
(`ModelComparison.details`, written by the worker) and from the catalogue:

- the candidate must not drop a category the active version serves (a class of its head) while
  published listings use that category or one below it;
- on every category with at least `ACTIVATION_MIN_CATEGORY_PHOTOS` held-out photos, its recall
  must not fall more than `ACTIVATION_MAX_RECALL_DROP` below the active version's.

`services.registry.model_version_activate` refuses a candidate with objections unless staff confirm with
a written reason, which the activation row keeps beside the objections.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from catalog.models import Category, ModelComparison, ModelVersion
from catalog.selectors import catalogue as catalogue_selectors

# User-facing messages; tests reuse them.
DROPS_A_CATEGORY = (
    "{candidate} does not know {category}, which {active} serves; {listings} published listing{plural} "
    "{verb} in it."
)
LOSES_RECALL = (
    "{candidate} finds {category} in {candidate_recall:.0f} % of its {photos} held-out photos, "
    "{active} in {baseline_recall:.0f} %: {points:.1f} points lower, more than the {limit:g} allowed."
)


def served_categories(version: ModelVersion, comparison: ModelComparison | None = None) -> list[str]:
    """The categories a version's head was trained on, sorted: as the worker found them when it
    scored the comparison (`details["served"]`), else its stored manifest's classes."""
    details = (comparison.details if comparison else None) or {}
    if comparison is not None and version.pk in (comparison.candidate_id, comparison.baseline_id):
        role = "candidate" if version.pk == comparison.candidate_id else "baseline"
        found = (details.get("served") or {}).get(role)
        if found is not None:
            return sorted(str(slug) for slug in found)
    return sorted(str(slug) for slug in (version.head_manifest or {}).get("classes") or [])


def _published_listings_in(category: Category) -> int:
    ids = catalogue_selectors.category_descendant_ids(category=category)
    return catalogue_selectors.listings_published().filter(category_id__in=ids).count()


def activation_objections(
    *, candidate: ModelVersion, active: ModelVersion, comparison: ModelComparison | None
) -> list[str]:
    """The reasons, as sentences for staff, not to let `candidate` replace `active`; empty when
    none. `comparison` is their latest comparison (its per-category recall and photo counts,
    `details["recall_by_category"]`: {slug: {"candidate", "baseline", "photos"}})."""
    objections: list[str] = []
    paths = catalogue_selectors.category_paths()
    known = set(served_categories(candidate, comparison))
    dropped = [slug for slug in served_categories(active, comparison) if slug not in known]
    for category in Category.objects.filter(slug__in=dropped).order_by("slug"):
        listings = _published_listings_in(category)
        if listings:
            objections.append(
                DROPS_A_CATEGORY.format(
                    candidate=candidate.name,
                    category=paths.get(category.pk, category.name),
                    active=active.name,
                    listings=listings,
                    plural="" if listings == 1 else "s",
                    verb="is" if listings == 1 else "are",
                )
            )
    recall: dict[str, dict[str, Any]] = ((comparison.details if comparison else None) or {}).get(
        "recall_by_category"
    ) or {}
    names = {c.slug: paths.get(c.pk, c.name) for c in Category.objects.filter(slug__in=list(recall))}
    limit = settings.ACTIVATION_MAX_RECALL_DROP
    for slug, row in sorted(recall.items()):
        photos = int(row.get("photos") or 0)
        if photos < settings.ACTIVATION_MIN_CATEGORY_PHOTOS:
            continue
        drop = float(row.get("baseline") or 0.0) - float(row.get("candidate") or 0.0)
        if drop > limit + 1e-9:
            objections.append(
                LOSES_RECALL.format(
                    candidate=candidate.name,
                    category=names.get(slug, slug),
                    photos=photos,
                    candidate_recall=100 * float(row.get("candidate") or 0.0),
                    active=active.name,
                    baseline_recall=100 * float(row.get("baseline") or 0.0),
                    points=100 * drop,
                    limit=100 * limit,
                )
            )
    return objections
