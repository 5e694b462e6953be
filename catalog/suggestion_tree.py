"""How the photos' top-k of one listing become the categories it is offered.

Averaged over the photos, de-duplicated along the taxonomy tree (a parent and its own descendant
are never offered as rivals), and checked for photos that show different things. Pure functions
over category slugs and a `{slug: parent slug or None}` map, so the listing's derived suggestion
(`services.listing_suggestion_refresh`), the seller's panel and the review queue
(`selectors.listing_suggestions`) apply one rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

Parents = Mapping[str, str | None]
Ranked = list[tuple[str, float]]


def ancestors(slug: str, parents: Parents) -> list[str]:
    """The ancestors of `slug`, nearest first (empty for a top-level or unknown slug)."""
    found: list[str] = []
    node = parents.get(slug)
    while node is not None and node not in found and node != slug:
        found.append(node)
        node = parents.get(node)
    return found


def on_one_path(first: str, second: str, parents: Parents) -> bool:
    """Whether one category is the other or lies below it (e.g. vehicles and cars)."""
    return first == second or first in ancestors(second, parents) or second in ancestors(first, parents)


def average_top_k(top_ks: Iterable[Sequence[Mapping[str, object]]]) -> Ranked:
    """Mean confidence per slug over photos' top-k lists ([{"slug", "confidence"}], one list per
    photo; a slug missing from a photo's list counts 0 for it), best first, ties by slug."""
    totals: dict[str, float] = defaultdict(float)
    count = 0
    for top_k in top_ks:
        count += 1
        for entry in top_k:
            totals[str(entry["slug"])] += float(entry["confidence"])  # type: ignore[arg-type]
    if not count:
        return []
    return sorted(((slug, total / count) for slug, total in totals.items()), key=lambda i: (-i[1], i[0]))


def along_tree(ranked: Ranked, parents: Parents) -> Ranked:
    """One entry per branch of the tree: of a category and its ancestors or descendants in
    `ranked` (best first), only the most confident stays, in its place; when their confidences
    show as the same whole percent, the more specific one stays ("Vehicles 47 %" and
    "Vehicles › Cars 47 %" become "Vehicles › Cars 47 %")."""
    kept: Ranked = []
    for slug, confidence in ranked:
        rival = next((i for i, (other, _) in enumerate(kept) if on_one_path(slug, other, parents)), None)
        if rival is None:
            kept.append((slug, confidence))
            continue
        other, other_confidence = kept[rival]
        same_percent = round(other_confidence * 100) == round(confidence * 100)
        if same_percent and other in ancestors(slug, parents):
            kept[rival] = (slug, confidence)
    return kept


def shown(ranked: Ranked, *, min_confidence: float) -> Ranked:
    """The entries offered to a person: the first always, alternatives from `min_confidence` up."""
    return [entry for index, entry in enumerate(ranked) if index == 0 or entry[1] >= min_confidence]


def photos_disagree(
    top_ones: Iterable[tuple[str, float]], parents: Parents, *, min_confidence: float
) -> bool:
    """Whether photos whose own top-1 reaches `min_confidence` name categories on different
    branches of the tree (a laptop and a toaster); photos on one path (vehicles, cars) agree."""
    confident = list(dict.fromkeys(slug for slug, confidence in top_ones if confidence >= min_confidence))
    return any(
        not on_one_path(first, second, parents)
        for index, first in enumerate(confident)
        for second in confident[index + 1 :]
    )
