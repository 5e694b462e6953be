"""Stratified cross-validation folds: every row held out exactly once, classes spread evenly."""

from __future__ import annotations

import numpy as np

FOLDS = 5
SEED = 0


def stratified_folds(
    targets: np.ndarray, folds: int = FOLDS, seed: int = SEED
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` pairs ``(fit_rows, held_rows)`` of sorted int64 row indices over ``targets``
    (N,): each row is in exactly one ``held_rows``; each class's rows, shuffled with ``seed``,
    are dealt round-robin over the folds, continuing where the previous class stopped, so fold
    sizes differ by at most one. Deterministic."""
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        rng.shuffle(rows)
        for position, row in enumerate(rows):
            parts[(offset + position) % folds].append(int(row))
        offset += len(rows)
    everything = np.arange(len(labels), dtype=np.int64)
    held = [np.array(sorted(part), dtype=np.int64) for part in parts]
    return [(np.setdiff1d(everything, rows), rows) for rows in held]
