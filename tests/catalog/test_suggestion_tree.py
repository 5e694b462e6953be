"""The rule that turns photos' top-k into the categories a listing is offered: averaged, one entry
per branch of the tree, alternatives under 2 % hidden, and photos that disagree detected."""

from __future__ import annotations

from catalog import suggestion_tree as tree

PARENTS: dict[str, str | None] = {
    "vehicles": None,
    "cars": "vehicles",
    "motorcycles": "vehicles",
    "electronics": None,
    "computers": "electronics",
    "home": None,
    "kitchen": "home",
    "fashion": None,
    "bags": "fashion",
    "shoes": "fashion",
}


def test_a_parent_and_its_child_at_the_same_percent_become_the_child() -> None:
    # given "Vehicles 47 %" and "Vehicles › Cars 47 %" (not exactly equal underneath)
    ranked = [("vehicles", 0.4702), ("cars", 0.4689), ("motorcycles", 0.03)]

    # then one option stays, the more specific one, in the parent's place
    assert tree.along_tree(ranked, PARENTS) == [("cars", 0.4689), ("motorcycles", 0.03)]


def test_of_a_parent_and_its_child_the_more_confident_stays() -> None:
    assert tree.along_tree([("vehicles", 0.6), ("cars", 0.2), ("home", 0.1)], PARENTS) == [
        ("vehicles", 0.6),
        ("home", 0.1),
    ]
    assert tree.along_tree([("cars", 0.6), ("vehicles", 0.3)], PARENTS) == [("cars", 0.6)]
    # siblings are rivals, and stay
    assert tree.along_tree([("cars", 0.5), ("motorcycles", 0.4)], PARENTS) == [
        ("cars", 0.5),
        ("motorcycles", 0.4),
    ]


def test_a_whole_chain_collapses_to_one_entry() -> None:
    parents = {**PARENTS, "sedans": "cars"}
    ranked = [("vehicles", 0.30), ("cars", 0.30), ("sedans", 0.301), ("home", 0.05)]
    assert tree.along_tree(ranked, parents) == [("sedans", 0.301), ("home", 0.05)]


def test_alternatives_under_the_floor_are_hidden_but_never_the_first() -> None:
    ranked = [("shoes", 0.9), ("bags", 0.05), ("home", 0.019), ("cars", 0.0)]
    assert tree.shown(ranked, min_confidence=0.02) == [("shoes", 0.9), ("bags", 0.05)]
    assert tree.shown([("shoes", 0.01)], min_confidence=0.02) == [("shoes", 0.01)]


def test_average_counts_a_missing_slug_as_zero_for_that_photo() -> None:
    averaged = tree.average_top_k(
        [
            [{"slug": "shoes", "confidence": 0.8}, {"slug": "bags", "confidence": 0.2}],
            [{"slug": "shoes", "confidence": 0.6}],
        ]
    )
    assert averaged == [("shoes", 0.7), ("bags", 0.1)]
    assert tree.average_top_k([]) == []


def test_confident_photos_on_different_branches_disagree() -> None:
    # a laptop, a toaster and a bag, each confident
    bundle = [("computers", 0.9), ("kitchen", 0.8), ("bags", 0.7)]
    assert tree.photos_disagree(bundle, PARENTS, min_confidence=0.5)
    # photos on one path agree (a car, and a photo the model only calls a vehicle)
    assert not tree.photos_disagree([("cars", 0.9), ("vehicles", 0.8)], PARENTS, min_confidence=0.5)
    # an unconfident photo does not count
    assert not tree.photos_disagree([("shoes", 0.9), ("kitchen", 0.3)], PARENTS, min_confidence=0.5)
    # one photo, or none, never disagrees
    assert not tree.photos_disagree([("shoes", 0.9)], PARENTS, min_confidence=0.5)
    assert not tree.photos_disagree([], PARENTS, min_confidence=0.5)


def test_derive_gives_the_listings_top_k_margin_and_disagreement() -> None:
    photos = [
        [{"slug": "computers", "confidence": 0.9}, {"slug": "electronics", "confidence": 0.05}],
        [{"slug": "kitchen", "confidence": 0.8}, {"slug": "home", "confidence": 0.1}],
    ]
    derived = tree.derive(photos, PARENTS, keep=5, confident=0.5)
    assert derived is not None
    assert derived.top_k == [
        {"slug": "computers", "confidence": 0.45},
        {"slug": "kitchen", "confidence": 0.4},
    ]
    assert (derived.confidence, derived.margin, derived.photos_disagree) == (0.45, 0.05, True)
    assert tree.derive([], PARENTS, keep=5, confident=0.5) is None
    assert tree.derive([[]], PARENTS, keep=5, confident=0.5) is None


def test_the_chunk_wide_derivation_gives_each_listing_what_the_per_listing_rule_gives() -> None:
    # given random listings of 0-4 photos with top-k of 0-5 entries over the tree above, with
    # confidences of 6 places (some equal, some zero, some at the "confident" threshold)
    import numpy as np

    from catalog.services.listing_top_k import listings_suggestions_derive_arrays
    from catalog.services.suggestions import listing_suggestions_derive
    from catalog.services.top_k import StoredTopK

    rng = np.random.default_rng(7)
    slugs = [*PARENTS, "unknown-here"]
    values = [0.0, 0.5, 0.25, 0.123457, 0.47, 0.4749, 0.4751, 1.0]
    top_k_by_listing: dict[int, list[list[dict[str, object]]]] = {}
    photos: dict[int, list[dict[str, object]]] = {}
    listing_of: list[int] = []
    for listing_id in range(1, 400):
        top_k_by_listing[listing_id] = []
        for _ in range(int(rng.integers(0, 5))):
            chosen = rng.choice(len(slugs), size=int(rng.integers(1, 6)), replace=False)
            confidences = sorted(
                (float(rng.choice(values)) if rng.random() < 0.3 else round(float(rng.random()), 6))
                for _ in chosen
            )[::-1]
            top_k = [{"slug": slugs[c], "confidence": v} for c, v in zip(chosen, confidences, strict=True)]
            top_k_by_listing[listing_id].append(top_k)
            photos[len(photos) + 1] = top_k
            listing_of.append(listing_id - 1)

    # when derived listing by listing and for all of them at once
    expected = listing_suggestions_derive(top_k_by_listing, parents=PARENTS)
    derived = listings_suggestions_derive_arrays(
        listing_ids=list(top_k_by_listing),
        photo_listing=np.asarray(listing_of, dtype=np.int64),
        photos=StoredTopK.from_top_k(photos),
        parents=PARENTS,
        keep=5,
        confident=0.5,
    )

    # then every field of every listing is the same
    assert derived == expected
    assert any(entry.photos_disagree for entry in expected) and any(e.slug is None for e in expected)
