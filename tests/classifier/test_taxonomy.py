"""The shipped taxonomy is consistent and maps ImageNet classes where a marketplace expects."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from classifier.taxonomy import DEFAULT_TAXONOMY_PATH, TaxonomyError, load_taxonomy

CLOTHING_SLUGS = {
    "dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt",
}  # fmt: skip


def imagenet_id(name: str) -> int:
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V1.meta["categories"].index(name)


def test_every_slug_is_unique_in_the_file() -> None:
    # given the raw taxonomy file
    entries = json.loads(DEFAULT_TAXONOMY_PATH.read_text())
    # when counting slugs
    counts = Counter(entry["slug"] for entry in entries)
    # then none repeats
    assert [slug for slug, count in counts.items() if count > 1] == []


def test_every_parent_exists() -> None:
    entries = json.loads(DEFAULT_TAXONOMY_PATH.read_text())
    slugs = {entry["slug"] for entry in entries}
    assert [e["slug"] for e in entries if e["parent"] is not None and e["parent"] not in slugs] == []


def test_top_level_categories_are_the_marketplace_sections() -> None:
    taxonomy = load_taxonomy()
    assert set(taxonomy.roots()) == {
        "vehicles", "electronics", "home", "fashion", "books", "sports", "music", "kids",
    }  # fmt: skip


def test_the_ten_clothing_categories_are_leaves_under_fashion() -> None:
    taxonomy = load_taxonomy()
    for slug in CLOTHING_SLUGS:
        assert taxonomy.parent(slug) == "fashion"
        assert taxonomy.children(slug) == []
    assert set(taxonomy.descendants("fashion")) >= CLOTHING_SLUGS


def test_imagenet_ids_are_in_range_and_mapped_once() -> None:
    # given every category's ImageNet ids
    taxonomy = load_taxonomy()
    ids = [i for category in taxonomy for i in category.imagenet_ids]
    # then each is a valid ImageNet-1k index, and no class votes for two categories
    assert all(0 <= i < 1000 for i in ids)
    assert len(ids) == len(set(ids))
    assert len(ids) > 300


@pytest.mark.parametrize(
    ("imagenet_name", "slug"),
    [
        ("running shoe", "shoes"), ("sandal", "shoes"), ("Loafer", "shoes"), ("clog", "shoes"),
        ("cowboy boot", "shoes"), ("jersey", "t-shirt"), ("miniskirt", "skirt"), ("jean", "pants"),
        ("cardigan", "longsleeve"), ("sweatshirt", "longsleeve"), ("trench coat", "outwear"),
        ("fur coat", "outwear"), ("lab coat", "outwear"), ("poncho", "outwear"), ("purse", "bags"),
        ("backpack", "bags"), ("wallet", "bags"), ("cowboy hat", "hat"), ("sombrero", "hat"),
        ("gown", "dress"), ("swimming trunks", "shorts"), ("cellular telephone", "phones"),
        ("laptop", "computers"), ("sports car", "cars"), ("mountain bike", "bicycles"),
        ("wardrobe", "furniture"), ("washer", "appliances"), ("teddy", "kids"),
        ("acoustic guitar", "music"), ("dumbbell", "fitness"), ("comic book", "books"),
    ],
)  # fmt: skip
def test_imagenet_class_maps_to_the_most_specific_category(imagenet_name: str, slug: str) -> None:
    owner = load_taxonomy().imagenet_owner()
    assert owner[imagenet_id(imagenet_name)] == slug


def test_tree_navigation() -> None:
    taxonomy = load_taxonomy()
    assert taxonomy.ancestors("shoes") == ["fashion"]
    assert taxonomy.ancestors("fashion") == []
    assert taxonomy.path("shoes") == ["Fashion", "Shoes"]
    assert taxonomy.root("phones") == "electronics"
    assert taxonomy.is_descendant_or_self("shoes", "fashion")
    assert taxonomy.is_descendant_or_self("fashion", "fashion")
    assert not taxonomy.is_descendant_or_self("fashion", "shoes")
    assert not taxonomy.is_descendant_or_self("phones", "fashion")
    assert set(taxonomy.descendants("electronics")) == {"phones", "computers", "cameras", "audio-video"}
    assert taxonomy.lowest_common_ancestor(["shoes", "hat", "bags"]) == "fashion"
    assert taxonomy.lowest_common_ancestor(["shoes", "phones"]) is None
    with pytest.raises(KeyError, match="Unknown category slug 'nope'"):
        taxonomy.get("nope")


def write(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(entries))
    return path


def test_duplicate_slug_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, [{"slug": "a", "name": "A", "parent": None}] * 2)
    with pytest.raises(TaxonomyError, match="Duplicate category slug 'a'"):
        load_taxonomy(path)


def test_unknown_parent_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, [{"slug": "a", "name": "A", "parent": "ghost"}])
    with pytest.raises(TaxonomyError, match="unknown parent 'ghost'"):
        load_taxonomy(path)


def test_cycle_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, [{"slug": "a", "name": "A", "parent": "b"}, {"slug": "b", "name": "B", "parent": "a"}]
    )
    with pytest.raises(TaxonomyError, match="Cycle"):
        load_taxonomy(path)


def test_imagenet_id_mapped_twice_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"slug": "a", "name": "A", "parent": None, "imagenet_ids": [1]},
            {"slug": "b", "name": "B", "parent": None, "imagenet_ids": [1]},
        ],
    )
    with pytest.raises(TaxonomyError, match="ImageNet id 1 is mapped by both 'a' and 'b'"):
        load_taxonomy(path)


def test_imagenet_id_out_of_range_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, [{"slug": "a", "name": "A", "parent": None, "imagenet_ids": [1000]}])
    with pytest.raises(TaxonomyError, match="outside 0..999"):
        load_taxonomy(path)
