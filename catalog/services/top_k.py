"""Photos' top-k as arrays, and the suggestion rows they become, without a Python object per photo.

A head-only bulk chunk scores thousands of photos with a few matrix products; building a tuple, a
dict and a JSON string per photo would then cost more than scoring them. So the top-k travel as
arrays (`ScoredPhotos`: image ids, top-k column indices into the head's slugs, confidences),
columns become category ids by one numpy lookup, and the rows of `suggestions_record_many`'s
binary COPY (`copy_rows`) are laid out by numpy, the top-k JSON included (assembled from
pre-quoted slugs and the distinct rounded confidences). The upload path and the CNN path wrap
their few rows into the same arrays (`ScoredPhotos.from_rows`): one write path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A photo's top-k as stored: `[{"slug", "confidence" rounded to 6 places}]`, best first.
TopK = list[dict[str, Any]]


@dataclass(frozen=True)
class ScoredPhotos:
    """Photos' top-k, best first: `image_ids` int64 (N,); `columns` int (N, k), indices into
    `slugs`, -1 for no entry; `confidences` float64 (N, k)."""

    image_ids: np.ndarray
    columns: np.ndarray
    confidences: np.ndarray
    slugs: Sequence[str]

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, Sequence[tuple[str, float]]]]) -> ScoredPhotos:
        """From `(image id, [(slug, confidence), ...] best first)` rows (any lengths)."""
        slugs: dict[str, int] = {}
        width = max((len(top_k) for _, top_k in rows), default=1) or 1
        columns = np.full((len(rows), width), -1, dtype=np.int64)
        confidences = np.zeros((len(rows), width), dtype=np.float64)
        for row, (_, top_k) in enumerate(rows):
            for position, (slug, confidence) in enumerate(top_k):
                columns[row, position] = slugs.setdefault(slug, len(slugs))
                confidences[row, position] = float(confidence)
        image_ids = np.asarray([image_id for image_id, _ in rows], dtype=np.int64)
        return cls(image_ids, columns, confidences, list(slugs))


def round6(values: np.ndarray) -> np.ndarray:
    """`round(value, 6)` of each float64, exactly as Python rounds (the decimal value of the
    binary one, half to even): numpy's rounding of `value * 1e6`, and Python's for the values
    too close to a half for that product to decide (and for large or non-finite ones)."""
    scaled = values * 1e6
    rounded = np.rint(scaled) / 1e6
    with np.errstate(invalid="ignore"):
        unsure = ~(np.abs(values) <= 1e3) | (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    for index in zip(*np.nonzero(unsure), strict=True):
        rounded[index] = round(float(values[index]), 6)
    return rounded


@dataclass(eq=False)  # compared as a mapping
class StoredTopK(Mapping[int, TopK]):
    """The top-k kept for photos (known categories only, confidences rounded to 6 places), as
    arrays: `image_ids` (M,), `columns` (M, k) into `slugs` with -1 after each photo's last
    entry, `rounded` float64 (M, k). A mapping image id → `TopK`, each built when read."""

    image_ids: np.ndarray
    columns: np.ndarray
    rounded: np.ndarray
    slugs: Sequence[str]
    _rows: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rows = {image_id: row for row, image_id in enumerate(self.image_ids.tolist())}

    @classmethod
    def from_top_k(cls, top_k: Mapping[int, Sequence[Mapping[str, Any]]]) -> StoredTopK:
        """From top-k as stored (`{image id: [{"slug", "confidence"}, ...]}`), in its order."""
        scores = ScoredPhotos.from_rows(
            [
                (image_id, [(str(e["slug"]), float(e["confidence"])) for e in entries])
                for image_id, entries in top_k.items()
            ]
        )
        return cls(scores.image_ids, scores.columns, scores.confidences, scores.slugs)

    def __getitem__(self, image_id: int) -> TopK:
        row = self._rows[image_id]
        return [
            {"slug": self.slugs[column], "confidence": value}
            for column, value in zip(self.columns[row].tolist(), self.rounded[row].tolist(), strict=True)
            if column >= 0
        ]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass(frozen=True)
class SuggestionRows:
    """What `known_entries` keeps: `stored` (photos with a known category), the category id and
    unrounded confidence of each one's first entry, and the photos with none (`dropped`)."""

    stored: StoredTopK
    category_ids: np.ndarray
    confidence: np.ndarray
    dropped: list[int]


def known_entries(scores: ScoredPhotos, category_of: Mapping[str, int]) -> SuggestionRows:
    """Drop the entries whose slug has no category id in `category_of` (keeping the order of
    the others), round the confidences kept, and tell the photos left without any entry."""
    lookup = np.asarray([category_of.get(slug, -1) for slug in scores.slugs] + [-1], dtype=np.int64)
    columns = scores.columns.astype(np.int64, copy=False)
    categories = lookup[columns]  # column -1 reads the sentinel
    known = categories >= 0
    if not known.all():  # the known entries first, in their order
        order = np.argsort(~known, axis=1, kind="stable")
        columns = np.where(np.take_along_axis(known, order, 1), np.take_along_axis(columns, order, 1), -1)
        confidences = np.take_along_axis(scores.confidences, order, 1)
        categories = np.take_along_axis(categories, order, 1)
    else:
        confidences = scores.confidences
    confidences = confidences.astype(np.float64, copy=False)
    kept = known.any(axis=1)
    dropped = scores.image_ids[~kept].tolist()
    columns, confidences, categories = columns[kept], confidences[kept], categories[kept]
    rounded = np.where(columns >= 0, round6(confidences), 0.0)
    stored = StoredTopK(scores.image_ids[kept].astype(np.int64), columns, rounded, scores.slugs)
    return SuggestionRows(stored, categories[:, 0], confidences[:, 0], dropped)


def copy_rows(rows: SuggestionRows) -> bytes:
    """Binary COPY rows (no header, no trailer) of `(image_id int8, category_id int8,
    confidence float8, top_k text)`: the top-k as the JSON the upload path has always written,
    `[{"slug": "...", "confidence": 0.123457}, ...]`, padded with spaces to one width (JSON
    ignores them) so that every row has the same layout."""
    stored = rows.stored
    count, width = stored.columns.shape
    if not count:
        return b""
    # the distinct rounded values, written as Python writes them (repr), once each
    values, inverse = np.unique(stored.rounded, return_inverse=True)
    numbers = np.asarray([repr(value).encode() for value in values.tolist()])
    inverse = inverse.reshape(stored.rounded.shape)
    prefixes = np.asarray(
        [f'{{"slug": {json.dumps(slug)}, "confidence": '.encode() for slug in stored.slugs] + [b""]
    )
    text = np.full(count, b"[", dtype="S1")
    for position in range(width):
        present = stored.columns[:, position] >= 0
        entry = np.strings.add(
            np.strings.add(prefixes[stored.columns[:, position]], numbers[inverse[:, position]]), b"}"
        )
        if position:
            entry = np.strings.add(b", ", entry)
        text = np.strings.add(text, np.where(present, entry, b""))
    text = np.strings.add(text, b"]")
    size = max(1, int(np.strings.str_len(text).max()))
    layout = np.dtype(
        [
            ("fields", ">i2"),
            ("id_size", ">i4"), ("image_id", ">i8"),
            ("category_size", ">i4"), ("category_id", ">i8"),
            ("confidence_size", ">i4"), ("confidence", ">f8"),
            ("top_k_size", ">i4"), ("top_k", f"S{size}"),
        ]
    )  # fmt: skip
    out = np.zeros(count, dtype=layout)
    out["fields"] = 4
    out["id_size"], out["image_id"] = 8, stored.image_ids
    out["category_size"], out["category_id"] = 8, rows.category_ids
    out["confidence_size"], out["confidence"] = 8, rows.confidence
    out["top_k_size"], out["top_k"] = size, np.strings.ljust(text, size, b" ")
    return out.tobytes()
