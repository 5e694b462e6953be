"""Many listings' suggestions from their photos' top-k as arrays: `suggestion_tree.derive`'s rule
(the one `suggestions.listing_suggestions_derive` applies per listing) over a whole bulk chunk.

Averaging, ranking and the photos-disagree check are matrix operations over (listing,
category); only listings that hold a category together with one of its ancestors or descendants
go through `suggestion_tree.along_tree` (a loop, but short). The results are the per-listing
ones exactly: sums are accumulated in the same order, and rounding is Python's (`top_k.round6`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from catalog import suggestion_tree
from catalog.services.top_k import StoredTopK, round6

if TYPE_CHECKING:
    from catalog.services.suggestions import ListingSuggestionFields


def stored_top_k_merge(pieces: Sequence[StoredTopK]) -> StoredTopK:
    """One `StoredTopK` of `pieces` in order (columns mapped onto the union of their slugs).
    An image id present twice keeps its last top-k in its first place, as a dict update does."""
    slugs: dict[str, int] = {}
    width = max((piece.columns.shape[1] for piece in pieces), default=1)
    ids, columns, rounded = [], [], []
    for piece in pieces:
        mapping = np.asarray(
            [slugs.setdefault(slug, len(slugs)) for slug in piece.slugs] + [-1], dtype=np.int64
        )
        pad = width - piece.columns.shape[1]
        ids.append(piece.image_ids.astype(np.int64))
        columns.append(np.pad(mapping[piece.columns], ((0, 0), (0, pad)), constant_values=-1))
        rounded.append(np.pad(piece.rounded, ((0, 0), (0, pad))))
    if not ids:
        return StoredTopK(np.zeros(0, np.int64), np.full((0, 1), -1, np.int64), np.zeros((0, 1)), [])
    merged = StoredTopK(np.concatenate(ids), np.concatenate(columns), np.concatenate(rounded), list(slugs))
    if len(merged) == len(merged.image_ids):
        return merged
    last = {image_id: row for row, image_id in enumerate(merged.image_ids.tolist())}
    first = list(dict.fromkeys(merged.image_ids.tolist()))
    rows = np.asarray([last[image_id] for image_id in first], dtype=np.int64)
    return StoredTopK(merged.image_ids[rows], merged.columns[rows], merged.rounded[rows], merged.slugs)


def listings_suggestions_derive_arrays(
    *,
    listing_ids: Sequence[int],
    photo_listing: np.ndarray,
    photos: StoredTopK,
    parents: Mapping[str, str | None],
    keep: int,
    confident: float,
) -> list[ListingSuggestionFields]:
    """`suggestions.listing_suggestions_derive` for many listings at once, with the same results.

    `listing_ids`: the listings, in the order of the results; `photo_listing` (P,): the row in
    `listing_ids` of each photo of `photos` (their top-k, in the order the per-listing rule
    would read them); `parents`: `{slug: parent slug}`; `keep`, `confident`: as
    `suggestion_tree.derive`'s."""
    from catalog.services.suggestions import ListingSuggestionFields

    count = len(listing_ids)
    slugs = list(photos.slugs)
    width = len(slugs)
    columns, rounded = photos.columns, photos.rounded
    means, present = _listing_means(columns, rounded, photo_listing, count, width)
    # ranked: by mean descending, ties by slug (a stable sort over slug-ordered columns)
    by_slug = np.asarray(sorted(range(width), key=lambda column: slugs[column]), dtype=np.int64)
    keys = np.where(present, -means, np.inf)[:, by_slug]
    ranked = by_slug[np.argsort(keys, axis=1, kind="stable")]
    entries = np.count_nonzero(present, axis=1)
    above, related = _tree(slugs, parents)
    tangled = np.asarray((((present.astype(np.int64) @ related.astype(np.int64)) > 0) & present).any(axis=1))
    firsts = _confident_firsts(photo_listing, photos, count, confident)
    unrelated = ~related & ~np.eye(width, dtype=bool)
    tree_rows = (above.tolist(), related.tolist())
    apart = np.asarray((((firsts.astype(np.int64) @ unrelated.astype(np.int64)) > 0) & firsts).any(axis=1))

    top = min(keep, width) if width else 0
    best = ranked[:, :top]
    best_means = np.take_along_axis(means, best, axis=1) if top else np.zeros((count, 0))
    best_rounded = round6(best_means)
    second = np.where(entries > 1, best_rounded[:, 1], 0.0) if top > 1 else np.zeros(count)
    margins = round6(best_rounded[:, 0] - second) if top else np.zeros(count)
    derived: list[ListingSuggestionFields] = []
    best_rows, rounded_rows, means_rows = best.tolist(), best_rounded.tolist(), best_means.tolist()
    entry_counts: list[int] = entries.tolist()
    tangled_rows: list[bool] = [bool(value) for value in tangled]
    apart_rows: list[bool] = [bool(value) for value in apart]
    for row, listing_id in enumerate(listing_ids):
        if not entry_counts[row]:
            derived.append(ListingSuggestionFields(listing_id, None, None))
            continue
        if tangled_rows[row]:
            order = ranked[row, : entry_counts[row]]
            entries_of_row = list(zip(order.tolist(), means[row, order].tolist(), strict=True))
            derived.append(
                _derive_along_tree(listing_id, entries_of_row, tree_rows, slugs, keep, apart_rows[row])
            )
            continue
        kept = min(entry_counts[row], top)
        top_k = [
            {"slug": slugs[column], "confidence": value}
            for column, value in zip(best_rows[row][:kept], rounded_rows[row][:kept], strict=True)
        ]
        derived.append(
            ListingSuggestionFields(
                listing_id,
                slugs[best_rows[row][0]],
                means_rows[row][0],
                top_k=top_k,
                margin=float(margins[row]),
                photos_disagree=apart_rows[row],
            )
        )
    return derived


def _listing_means(
    columns: np.ndarray, rounded: np.ndarray, photo_listing: np.ndarray, count: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(L, S) mean confidence and presence per (listing, slug): totals accumulated photo by photo
    as the per-listing rule adds them, divided by the listing's photo count."""
    present_entry = columns >= 0
    rows = np.broadcast_to(photo_listing[:, None], columns.shape)[present_entry]
    flat = rows * width + columns[present_entry]
    flat_totals = np.zeros(count * width, dtype=np.float64)
    np.add.at(flat_totals, flat, rounded[present_entry])
    flat_present = np.zeros(count * width, dtype=bool)
    flat_present[flat] = True
    totals, present = flat_totals.reshape(count, width), flat_present.reshape(count, width)
    photo_count = np.bincount(photo_listing, minlength=count)
    return totals / np.maximum(photo_count, 1)[:, None], present


def _tree(slugs: Sequence[str], parents: Mapping[str, str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) bool matrices over `slugs`: `above[i, j]`, slug j is an ancestor of slug i
    (`suggestion_tree.ancestors`); `related[i, j]`, two different slugs lie on one path."""
    lineage = [set(suggestion_tree.ancestors(slug, parents)) for slug in slugs]
    above = np.asarray([[other in lineage[i] for other in slugs] for i in range(len(slugs))], dtype=bool)
    above = above.reshape(len(slugs), len(slugs))
    related = (above | above.T) & ~np.eye(len(slugs), dtype=bool)
    return above, related


def _confident_firsts(
    photo_listing: np.ndarray, photos: StoredTopK, count: int, confident: float
) -> np.ndarray:
    """(L, S) bool: the slugs some photo of the listing has first with at least `confident`."""
    firsts = np.zeros((count, len(photos.slugs)), dtype=bool)
    if not len(photo_listing):
        return firsts
    has = (photos.columns[:, 0] >= 0) & (photos.rounded[:, 0] >= confident)
    firsts[photo_listing[has], photos.columns[has, 0]] = True
    return firsts


def _derive_along_tree(
    listing_id: int,
    ranked: list[tuple[int, float]],
    tree: tuple[list[list[bool]], list[list[bool]]],
    slugs: Sequence[str],
    keep: int,
    apart: bool,
) -> ListingSuggestionFields:
    """A listing holding a category with an ancestor of it: `suggestion_tree.along_tree` on its
    ranked `(column, mean)` entries (`tree`: `_tree`'s matrices as lists), then as
    `suggestion_tree.derive`."""
    from catalog.services.suggestions import ListingSuggestionFields

    above, related = tree
    kept: list[tuple[int, float]] = []
    for column, confidence in ranked:  # suggestion_tree.along_tree, over columns
        rival = next((i for i, (other, _) in enumerate(kept) if related[column][other]), None)
        if rival is None:
            kept.append((column, confidence))
            continue
        other, other_confidence = kept[rival]
        same_percent = round(other_confidence * 100) == round(confidence * 100)
        if same_percent and above[column][other]:
            kept[rival] = (column, confidence)
    kept = kept[:keep]
    second = round(kept[1][1], 6) if len(kept) > 1 else 0.0
    return ListingSuggestionFields(
        listing_id,
        slugs[kept[0][0]],
        kept[0][1],
        top_k=[{"slug": slugs[column], "confidence": round(mean, 6)} for column, mean in kept],
        margin=round(round(kept[0][1], 6) - second, 6),
        photos_disagree=apart,
    )
