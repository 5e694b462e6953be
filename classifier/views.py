"""Which views of a photo the backbone runs: the first always, the others only when they matter.

A head is trained on backbone outputs averaged over its views (``LinearHead.views``; for the
shipped head the whole shorter side, and the ImageNet 87.5 % crop mirrored). Running every view
multiplies the network's cost by their number, while most photos are decided by the first view
alone. ``ViewPolicy`` runs the first view, scores it, and runs the other views only for photos
whose top-2 margin (confidence of the first category minus that of the second) is below
``second_view_margin``; those photos' outputs are then averaged over all the views, exactly as
when every view runs.

The default margin was chosen on clothing-small/validation (never test) with
``python -m bench.views``, which prints the trade-off table (share of photos given the other
views, accuracy, top-1 agreement with always running every view, auto-accept precision and
coverage) and is recorded in docs/BENCHMARKS.md ("Second view"). Rerun it after training a head:
the right margin depends on the head.

The margin is a setting: ``CLASSIFIER_SECOND_VIEW_MARGIN`` in the environment (workers, the
``python -m classifier`` CLI) overrides the default; ``1`` runs every view for every photo (the
behaviour before the policy), ``0`` only the first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classifier.outputs import at_stored_precision

#: Chosen on clothing-small/validation by ``python -m bench.views`` for the shipped head
#: (``fashion-linear-v3``, int8 backbone): the smallest margin whose top-1 accuracy and
#: auto-accept precision stay within 0.3 points of always running both views, with top-1 agreeing
#: with both views' on 99.7 % of photos; 1.09 backbone runs per photo instead of 2, at the cost
#: of some auto-accept coverage (see docs/BENCHMARKS.md, "Second view").
DEFAULT_SECOND_VIEW_MARGIN = 0.3
MARGIN_ENVIRONMENT = "CLASSIFIER_SECOND_VIEW_MARGIN"


def top2_margin(scores: np.ndarray) -> np.ndarray:
    """Confidence of the first category minus that of the second, float64 (N,) in [0, 1], from
    scores (N, K) as ``ImageClassifier.scores_from_outputs`` returns them (K ≥ 2)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    top = np.partition(scores, -2, axis=1)[:, -2:]
    return np.asarray(top[:, 1] - top[:, 0], dtype=np.float64)


@dataclass(frozen=True)
class ViewPolicy:
    """Run the head's views after the first only for photos the first view leaves uncertain.

    ``second_view_margin``: photos whose top-2 margin after the first view is below it get the
    other views too; ``>= 1`` gives every photo every view, ``<= 0`` the first view only.
    ``first_view``: index into the head's views of the view every photo gets.
    """

    second_view_margin: float = DEFAULT_SECOND_VIEW_MARGIN
    first_view: int = 0

    @classmethod
    def from_environment(cls) -> ViewPolicy:
        """The default policy, with ``CLASSIFIER_SECOND_VIEW_MARGIN`` when set. Raises
        ``ValueError`` when it is set to something that is not a number."""
        value = os.environ.get(MARGIN_ENVIRONMENT, "").strip()
        if not value:
            return cls()
        try:
            return cls(second_view_margin=float(value))
        except ValueError as error:
            raise ValueError(f"{MARGIN_ENVIRONMENT} must be a number, got {value!r}.") from error

    def first_index(self, view_count: int) -> int:
        """The index of the view every photo gets, for a head with ``view_count`` views."""
        return self.first_view if 0 <= self.first_view < view_count else 0

    def needs_more_views(self, scores: np.ndarray) -> np.ndarray:
        """Bool (N,): which photos, scored (N, K) on their first view, get the other views."""
        count = len(np.atleast_2d(scores))
        if self.second_view_margin >= 1.0:
            return np.ones(count, dtype=bool)
        if self.second_view_margin <= 0.0:
            return np.zeros(count, dtype=bool)
        return np.asarray(top2_margin(scores) < self.second_view_margin)


@dataclass
class ViewOutputs:
    """Backbone outputs of a batch under a ``ViewPolicy``, rows in input order.

    ``embeddings`` float32 (N, 1280) and ``logits`` float32 (N, 1000): the first view's, or the
    mean over every view for photos that got them all; ``scores`` float64 (N, K) from
    ``ImageClassifier.scores_from_outputs``; ``views`` int (N,): views run for each photo.
    """

    embeddings: np.ndarray
    logits: np.ndarray
    scores: np.ndarray
    views: np.ndarray


#: ``run(batch)`` → ``(embeddings (M, 1280), logits (M, 1000))`` for a float32 (M, 3, H, W) batch.
BackboneRun = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``score(embeddings, logits)`` → float64 (N, K) category confidences.
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``other_views(rows)`` → float32 (R × len(rows), 3, H, W): the other views of the photos at
#: ``rows`` of the batch, view-major (every photo in the first other view, then the next, ...).
OtherViews = Callable[[Sequence[int]], np.ndarray]


def run_views(
    first: np.ndarray,
    other_views: OtherViews,
    *,
    view_count: int,
    run: BackboneRun,
    score: Scorer,
    policy: ViewPolicy,
) -> ViewOutputs:
    """Runs the first view of every photo (``first`` float32 (N, 3, H, W)), then the other
    ``view_count − 1`` views of the photos the policy picks (one more backbone call for all of
    them), and scores. Returns ``ViewOutputs``.

    Outputs are rounded to the embedding cache's precision before they are scored
    (``classifier.outputs``), so a photo scored now and scored later from its cached outputs
    gets the same figures."""
    # New arrays (never the backbone's own buffers), so the rows updated below are ours to change.
    embeddings, logits = (at_stored_precision(values) for values in run(first))
    scores = score(embeddings, logits)
    views = np.ones(len(first), dtype=np.int64)
    if view_count < 2 or len(first) == 0:
        return ViewOutputs(embeddings, logits, scores, views)
    rows = np.flatnonzero(policy.needs_more_views(scores))
    if len(rows) == 0:
        return ViewOutputs(embeddings, logits, scores, views)
    more_embeddings, more_logits = run(other_views(rows.tolist()))
    others = view_count - 1
    embeddings[rows] = at_stored_precision(
        np.concatenate([embeddings[rows][None], more_embeddings.reshape(others, len(rows), -1)]).mean(axis=0)
    )
    logits[rows] = at_stored_precision(
        np.concatenate([logits[rows][None], more_logits.reshape(others, len(rows), -1)]).mean(axis=0)
    )
    scores[rows] = score(embeddings[rows], logits[rows])
    views[rows] = view_count
    return ViewOutputs(embeddings, logits, scores, views)
