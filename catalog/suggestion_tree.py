"""How the photos' top-k of one listing become the categories it is offered.

Averaged over the photos, de-duplicated along the taxonomy tree (a parent and its own descendant
are never offered as rivals), and checked for photos that show different things. Pure functions
over category slugs and a `{slug: parent slug or None}` map, so the listing's derived suggestion
(`services.suggestions.listing_suggestion_refresh`), the seller's panel and the review queue
(`selectors.suggestions.listing_suggestions`) apply one rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ListingSuggestion:
    """What a listing's photos suggest (see `derive`)."""

    top_k: list[dict[str, object]]  # [{"slug", "confidence" rounded to 6 places}], best first
    confidence: float  # mean confidence of the first, 0..1
    margin: float  # first minus second confidence (0 for a lone category)
    photos_disagree: bool


def derive(
    top_ks: Sequence[Sequence[Mapping[str, object]]], parents: Parents, *, keep: int, confident: float
) -> ListingSuggestion | None:
    """A listing's suggestion from its photos' top-k lists (one per classified photo): averaged,
    one entry per branch of the tree, the first `keep` kept; whether photos whose top-1 reaches
    `confident` disagree. None without any entry. The upload path and bulk reclassification
    both derive a listing's suggestion here."""
    ranked = along_tree(average_top_k(top_ks), parents)[:keep]
    if not ranked:
        return None
    top_k: list[dict[str, object]] = [{"slug": slug, "confidence": round(mean, 6)} for slug, mean in ranked]
    second = round(ranked[1][1], 6) if len(ranked) > 1 else 0.0
    firsts = [(str(entries[0]["slug"]), float(entries[0]["confidence"])) for entries in top_ks if entries]  # type: ignore[arg-type]
    return ListingSuggestion(
        top_k=top_k,
        confidence=ranked[0][1],
        margin=round(round(ranked[0][1], 6) - second, 6),
        photos_disagree=photos_disagree(firsts, parents, min_confidence=confident),
    )
