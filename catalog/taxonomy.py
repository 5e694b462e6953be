"""Load the taxonomy data file (classifier/data/taxonomy.json) into `Category` rows.

The file is read as plain JSON so that the web process never imports the `classifier` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_taxonomy_file(path: Path | str) -> list[dict[str, Any]]:
    """Return the taxonomy entries, parents before children.

    Each entry: {"slug": str, "name": str, "parent": str | None, "imagenet_ids": [int, ...]}.
    Accepts a top-level list or {"categories": [...]}. Raises ValueError for an unknown parent.
    """
    data = json.loads(Path(path).read_text())
    entries = data["categories"] if isinstance(data, dict) else data
    by_slug = {entry["slug"]: entry for entry in entries}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(entry: dict[str, Any]) -> None:
        if entry["slug"] in seen:
            return
        parent = entry.get("parent")
        if parent:
            if parent not in by_slug:
                raise ValueError(f"category {entry['slug']!r} has unknown parent {parent!r}")
            visit(by_slug[parent])
        seen.add(entry["slug"])
        ordered.append(entry)

    for entry in entries:
        visit(entry)
    return ordered


def taxonomy_sync(category_model: Any, path: Path | str) -> int:
    """Create or update one row of `category_model` per taxonomy entry; returns the count.

    Takes the model class as an argument so data migrations can pass their historical model.
    Existing categories that are not in the file are left alone (staff may have added them).
    """
    count = 0
    for entry in read_taxonomy_file(path):
        parent = None
        if entry.get("parent"):
            parent = category_model.objects.get(slug=entry["parent"])
        category_model.objects.update_or_create(
            slug=entry["slug"],
            defaults={
                "name": entry.get("name") or entry["slug"].replace("-", " ").title(),
                "parent": parent,
                "imagenet_ids": list(entry.get("imagenet_ids") or []),
            },
        )
        count += 1
    return count
