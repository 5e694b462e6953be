"""The head's in-domain gate (``head.GateParameters``): class centroids, and the cosine weight and
threshold fitted on training photos so that photos from elsewhere must look like them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifier.head import GateParameters
from classifier.taxonomy import Taxonomy

#: Share of training photos the gate must keep in the domain (g ≥ 0.5).
GATE_TARGET_RECALL = 0.98


def centroids(features: np.ndarray, targets: np.ndarray, count: int) -> np.ndarray:
    """Unit-length class means (count, D) of ``features`` (N, D) by ``targets`` in [0, count),
    in ``features``' dtype (a zero mean stays zero)."""
    means = np.stack([features[targets == k].mean(axis=0) for k in range(count)])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def out_of_fold_similarity(
    features: np.ndarray,
    targets: np.ndarray,
    count: int,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each row's highest cosine similarity (N,) to the centroids of the other folds' rows, as a
    held-out photo would see it (so the threshold is not optimistic), and those centroids per fold."""
    similarity = np.zeros(len(targets))
    per_fold = []
    for fit_rows, held_rows in folds:
        fold_centroids = centroids(features[fit_rows], targets[fit_rows], count)
        per_fold.append(fold_centroids)
        similarity[held_rows] = (features[held_rows] @ fold_centroids.T).max(axis=1)
    return similarity, per_fold


def fit_gate(similarity: np.ndarray, share: np.ndarray) -> GateParameters:
    """Gate parameters from in-domain training photos.

    ``similarity``: out-of-fold centroid cosine similarity (N,); ``share``: zero-shot domain
    evidence (N,), see ``ZeroShotScorer.domain_evidence``. The weight makes the cosine term fall
    from 0.5 to 0.1 over one standard deviation of the similarity; the threshold is the highest
    that still keeps ``GATE_TARGET_RECALL`` of the photos at ``g ≥ 0.5``, so photos from elsewhere
    need to look that much like the training photos.
    """
    weight = float(np.log(9.0) / max(float(np.std(similarity)), 1e-6))
    candidates = np.sort(similarity)[::-1]
    threshold = float(candidates[-1])
    for candidate in candidates:
        resemblance = 1.0 / (1.0 + np.exp(-weight * (similarity - candidate)))
        gate = 1.0 - (1.0 - share) * (1.0 - resemblance)
        if float(np.mean(gate >= 0.5)) >= GATE_TARGET_RECALL:
            threshold = float(candidate)
            break
    return GateParameters(cosine_threshold=threshold, cosine_weight=weight)


def domain_evidence(taxonomy: Taxonomy, classes: Sequence[str], logits: np.ndarray) -> np.ndarray:
    """Zero-shot evidence (N,) that photos with ImageNet ``logits`` (N, 1000) lie in the part of
    ``taxonomy`` that ``classes`` share (their lowest common ancestor). Raises ``ValueError``
    when they share none."""
    from classifier.model import ZeroShotScorer

    domain = taxonomy.lowest_common_ancestor(list(classes))
    if domain is None:
        raise ValueError(f"Categories {list(classes)} share no taxonomy ancestor.")
    scorer = ZeroShotScorer(taxonomy)
    return np.asarray(scorer.domain_evidence(logits, scorer.subtree_mask(domain)))
