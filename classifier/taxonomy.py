"""The category tree that predictions are expressed in.

A taxonomy is a JSON list of ``{"slug", "name", "parent", "imagenet_ids"}`` objects (see
``classifier/data/taxonomy.json``). ``imagenet_ids`` are indices into the 1,000 ImageNet-1k classes
and let the backbone's ImageNet logits vote for a category without any labelled photos (zero-shot);
the ids of a category count for all its ancestors too. Stdlib only, so the web process can read the
tree without the vision stack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TAXONOMY_PATH = Path(__file__).resolve().parent / "data" / "taxonomy.json"
IMAGENET_CLASSES = 1000


class TaxonomyError(ValueError):
    """The taxonomy file is malformed: duplicate slug, unknown parent, cycle or bad ImageNet id."""


@dataclass(frozen=True)
class Category:
    """One node of the tree. ``parent`` is a slug or ``None`` for a top-level category."""

    slug: str
    name: str
    parent: str | None
    imagenet_ids: tuple[int, ...] = field(default=())


class Taxonomy:
    """An immutable category tree, in file order (parents before children is not required)."""

    def __init__(self, categories: list[Category]) -> None:
        self._by_slug: dict[str, Category] = {}
        for category in categories:
            if category.slug in self._by_slug:
                raise TaxonomyError(f"Duplicate category slug {category.slug!r}.")
            self._by_slug[category.slug] = category
        self._children: dict[str | None, list[str]] = {}
        for category in categories:
            if category.parent is not None and category.parent not in self._by_slug:
                raise TaxonomyError(f"Category {category.slug!r} has unknown parent {category.parent!r}.")
            self._children.setdefault(category.parent, []).append(category.slug)
        for category in categories:
            self.ancestors(category.slug)  # raises on a cycle
        owner: dict[int, str] = {}
        for category in categories:
            for imagenet_id in category.imagenet_ids:
                if not 0 <= imagenet_id < IMAGENET_CLASSES:
                    raise TaxonomyError(
                        f"Category {category.slug!r} maps ImageNet id {imagenet_id}, "
                        f"outside 0..{IMAGENET_CLASSES - 1}."
                    )
                if imagenet_id in owner:
                    raise TaxonomyError(
                        f"ImageNet id {imagenet_id} is mapped by both "
                        f"{owner[imagenet_id]!r} and {category.slug!r}."
                    )
                owner[imagenet_id] = category.slug

    @property
    def categories(self) -> list[Category]:
        """All categories, in file order."""
        return list(self._by_slug.values())

    @property
    def slugs(self) -> list[str]:
        """All slugs, in file order."""
        return list(self._by_slug)

    def __contains__(self, slug: object) -> bool:
        return slug in self._by_slug

    def __iter__(self) -> Iterator[Category]:
        return iter(self._by_slug.values())

    def __len__(self) -> int:
        return len(self._by_slug)

    def get(self, slug: str) -> Category:
        """Returns the category. Raises ``KeyError`` for an unknown slug."""
        try:
            return self._by_slug[slug]
        except KeyError:
            raise KeyError(f"Unknown category slug {slug!r}.") from None

    def parent(self, slug: str) -> str | None:
        """Slug of the parent, ``None`` for a top-level category."""
        return self.get(slug).parent

    def children(self, slug: str | None) -> list[str]:
        """Direct children of ``slug`` (``None``: the top-level categories)."""
        if slug is not None:
            self.get(slug)
        return list(self._children.get(slug, []))

    def roots(self) -> list[str]:
        """Top-level category slugs."""
        return self.children(None)

    def ancestors(self, slug: str) -> list[str]:
        """Slugs from the parent up to the root, nearest first; ``[]`` for a top-level category."""
        result: list[str] = []
        current = self.get(slug).parent
        while current is not None:
            if current in result or current == slug:
                raise TaxonomyError(f"Cycle in the taxonomy through {slug!r}.")
            result.append(current)
            current = self._by_slug[current].parent
        return result

    def descendants(self, slug: str) -> list[str]:
        """All slugs below ``slug`` (not itself), depth first."""
        result: list[str] = []
        stack = list(reversed(self.children(slug)))
        while stack:
            current = stack.pop()
            result.append(current)
            stack.extend(reversed(self._children.get(current, [])))
        return result

    def is_descendant_or_self(self, slug: str, of: str) -> bool:
        """True when ``slug`` is ``of`` or lies below it."""
        return slug == of or of in self.ancestors(slug)

    def root(self, slug: str) -> str:
        """The top-level category that ``slug`` belongs to."""
        ancestors = self.ancestors(slug)
        return ancestors[-1] if ancestors else slug

    def path(self, slug: str) -> list[str]:
        """Names from the root down to ``slug``, e.g. ``["Fashion", "Shoes"]``."""
        return [self.get(s).name for s in [*reversed(self.ancestors(slug)), slug]]

    def lowest_common_ancestor(self, slugs: list[str]) -> str | None:
        """Deepest category that is ``slug`` or an ancestor of every given slug; ``None`` if only
        the (implicit) root is shared."""
        if not slugs:
            return None
        common = [*reversed(self.ancestors(slugs[0])), slugs[0]]
        for slug in slugs[1:]:
            line = [*reversed(self.ancestors(slug)), slug]
            keep = 0
            while keep < min(len(common), len(line)) and common[keep] == line[keep]:
                keep += 1
            common = common[:keep]
        return common[-1] if common else None

    def imagenet_owner(self) -> dict[int, str]:
        """Maps each mapped ImageNet id to the slug that lists it."""
        return {i: c.slug for c in self for i in c.imagenet_ids}


def load_taxonomy(path: str | os.PathLike[str] | None = None) -> Taxonomy:
    """Reads a taxonomy JSON file (default: the shipped ``classifier/data/taxonomy.json``).

    Raises ``TaxonomyError`` when the file is malformed, ``OSError`` when it cannot be read.
    """
    source = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
    with open(source, encoding="utf-8") as handle:
        raw = json.load(handle)
    if not isinstance(raw, list):
        raise TaxonomyError(f"{source}: expected a JSON list of categories.")
    categories = []
    for item in raw:
        try:
            categories.append(
                Category(
                    slug=str(item["slug"]),
                    name=str(item["name"]),
                    parent=item.get("parent"),
                    imagenet_ids=tuple(int(i) for i in item.get("imagenet_ids", [])),
                )
            )
        except (KeyError, TypeError) as error:
            raise TaxonomyError(f"{source}: malformed category {item!r}.") from error
    return Taxonomy(categories)
