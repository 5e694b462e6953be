"""Calibrated top-k categories for photos: backbone → trained head + zero-shot → one distribution.

One backbone pass (averaged over the head's views) gives an embedding and ImageNet logits. Two
scorers read them:

- the trained head (``classifier.head``) knows the categories that have labelled photos (the ten
  clothing leaves) and covers their *domain*, the lowest common ancestor of its classes (fashion);
- the zero-shot scorer sums ImageNet softmax mass per taxonomy category through the taxonomy's
  ``imagenet_ids`` and knows every other category.

A gate ``g`` (probability that the photo lies in the domain, see ``GateParameters``) splits the
confidence:

- ``g`` goes to the domain. Within it, the domain's zero-shot-only categories (bags, accessories)
  get their share of the domain's zero-shot mass, discounted by how much the photo resembles the
  head's training photos (ImageNet calls many hats purses; a photo like the training photos is one
  of the head's classes); the head's classes share the rest by the head's calibrated probabilities.
- ``1 − g`` goes to categories outside the domain, in proportion to their zero-shot mass.

When less than ``MAPPED_MASS_FLOOR`` of the ImageNet mass falls on mapped classes (the photo shows
nothing the taxonomy sells), the zero-shot evidence and the outside share shrink with it, so the
confidences over all categories sum to at most 1, and to less for such photos.

Calibration: the head's probabilities are temperature-scaled on held-out folds (see
``classifier.training.temperature``); the zero-shot scores are ImageNet softmax masses at
temperature 1, which no labelled photos exist to calibrate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.backbone import OnnxBackbone, ensure_onnx
from classifier.head import ArtifactError, LinearHead
from classifier.preprocess import ImageRejected, ImageSource, load_image, to_batch
from classifier.taxonomy import Taxonomy, load_taxonomy
from classifier.views import ViewOutputs, ViewPolicy, run_views

MAX_BATCH = 32
#: Below this share of ImageNet mass on mapped classes, zero-shot confidences shrink proportionally.
MAPPED_MASS_FLOOR = 0.5


@dataclass(frozen=True)
class CategoryScore:
    """A category slug and its confidence in [0, 1]."""

    slug: str
    confidence: float


@dataclass
class Prediction:
    """Top-k categories for one photo, most confident first.

    ``embedding``: float32 (1280,), the backbone's pooled features, and ``logits``: float32 (1000,),
    its ImageNet logits (averaged over the views that ran, see ``classifier.views``), kept so the
    photo can be re-scored by a later head of the same backbone version without decoding it again
    (``ImageClassifier.scores_from_outputs``). ``timings_ms``: per-phase wall-clock milliseconds
    for this photo (batch phases divided evenly across the batch). ``views``: how many of the
    head's views the backbone ran for this photo.
    """

    top_k: list[CategoryScore]
    model_version: str
    embedding: np.ndarray
    logits: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    views: int = 1

    @property
    def category(self) -> str:
        """Slug of the most confident category."""
        return self.top_k[0].slug

    @property
    def confidence(self) -> float:
        """Confidence of the most confident category."""
        return self.top_k[0].confidence


class ZeroShotScorer:
    """Taxonomy category scores from ImageNet-1k logits, without labelled photos.

    Each category owns the ImageNet classes listed in its ``imagenet_ids``; a category's exclusive
    mass is the softmax probability of the classes it owns (its descendants' classes count for its
    subtree, see ``subtree_mask``).
    """

    def __init__(self, taxonomy: Taxonomy, temperature: float = 1.0) -> None:
        self.taxonomy = taxonomy
        self.slugs = taxonomy.slugs
        self.temperature = temperature
        self.index = {slug: position for position, slug in enumerate(self.slugs)}
        self.owner_matrix = np.zeros((1000, len(self.slugs)), dtype=np.float64)
        for category in taxonomy:
            for imagenet_id in category.imagenet_ids:
                self.owner_matrix[imagenet_id, self.index[category.slug]] = 1.0
        # A third of the ImageNet classes have an owner: the product needs only their rows.
        self._owned = np.flatnonzero(self.owner_matrix.any(axis=1))
        self._owner_rows = np.ascontiguousarray(self.owner_matrix[self._owned], dtype=np.float32)

    def exclusive_mass(self, logits: np.ndarray) -> np.ndarray:
        """ImageNet softmax mass owned by each category, float64 (N, K) in taxonomy order; rows sum
        to the mapped share (≤ 1).

        The softmax of ``softmax``, computed in place on one float32 copy (the logits carry float16
        precision, see ``classifier.outputs``; after the shift every exponential lies in (0, 1],
        where float32 keeps 24 bits), summed in float64 and normalised after the product (K
        columns instead of 1000): the same figures to 1e-6, at a fraction of the memory traffic
        and time the head-only path paid per photo in float64."""
        exponentials = np.array(logits, dtype=np.float32)
        if self.temperature != 1.0:
            exponentials /= np.float32(self.temperature)
        exponentials -= np.max(exponentials, axis=-1, keepdims=True)
        np.exp(exponentials, out=exponentials)
        total = np.sum(exponentials, axis=-1, keepdims=True, dtype=np.float64)
        mass = (exponentials[..., self._owned] @ self._owner_rows).astype(np.float64)
        mass /= total
        return np.asarray(mass)

    def domain_evidence(self, logits: np.ndarray, domain_mask: np.ndarray) -> np.ndarray:
        """Zero-shot evidence that photos lie in a domain, float64 (N,) in [0, 1]: the domain's
        share of the mapped mass, shrunk when little mass is mapped at all (so a photo of nothing
        the taxonomy sells is evidence for no domain)."""
        mass = self.exclusive_mass(logits)
        mapped = mass.sum(axis=1)
        share = mass[:, domain_mask].sum(axis=1) / np.maximum(mapped, 1e-12)
        return share * np.minimum(1.0, mapped / MAPPED_MASS_FLOOR)

    def subtree_mask(self, slug: str) -> np.ndarray:
        """Boolean (K,) mask of ``slug`` and its descendants."""
        mask = np.zeros(len(self.slugs), dtype=bool)
        for member in [slug, *self.taxonomy.descendants(slug)]:
            mask[self.index[member]] = True
        return mask


def _rows_of(images: Sequence[Image.Image]) -> Callable[[Sequence[int]], list[Image.Image]]:
    return lambda rows: [images[row] for row in rows]


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * value))


class ImageClassifier:
    """Photos in, calibrated top-k taxonomy categories out (see the module docstring for the method).

    Build with ``ImageClassifier.load()``. Thread-safe for concurrent ``predict`` calls (onnxruntime
    sessions are); create one per process. ``view_policy``: which of the head's views run for
    which photo (default ``ViewPolicy.from_environment()``).
    """

    def __init__(
        self,
        head: LinearHead,
        taxonomy: Taxonomy,
        backbone: OnnxBackbone | None = None,
        backbone_version: str | None = None,
        view_policy: ViewPolicy | None = None,
    ) -> None:
        self.head = head
        self.view_policy = view_policy or ViewPolicy.from_environment()
        self.taxonomy = taxonomy
        self.backbone = backbone
        self.backbone_version: str = (
            backbone.version if backbone is not None else (backbone_version or head.backbone_version)
        )
        if head.backbone_version != self.backbone_version:
            raise ArtifactError(
                f"Head {head.version!r} was trained on backbone {head.backbone_version!r}, "
                f"but the backbone is {self.backbone_version!r}; retrain the head "
                "(python -m classifier train)."
            )
        unknown = [slug for slug in head.classes if slug not in taxonomy]
        if unknown:
            raise ArtifactError(f"Head classes missing from the taxonomy: {unknown}.")
        self.model_version: str = f"{self.backbone_version}+{head.version}"
        self.zero_shot = ZeroShotScorer(taxonomy)
        self.slugs = taxonomy.slugs
        domain = taxonomy.lowest_common_ancestor(head.classes)
        if domain is None:
            raise ArtifactError("Head classes share no taxonomy ancestor, so it has no domain.")
        self.domain: str = domain
        self._domain_mask = self.zero_shot.subtree_mask(domain)
        self._head_columns = np.array([self.zero_shot.index[slug] for slug in head.classes])
        head_mask = np.zeros(len(self.slugs), dtype=bool)
        head_mask[self._head_columns] = True
        # The domain node's own ImageNet classes (suit, pajama, ...) are garments the head can place.
        self._uncovered_mask = self._domain_mask & ~head_mask
        self._uncovered_mask[self.zero_shot.index[domain]] = False
        self._outside_mask = ~self._domain_mask

    @classmethod
    def load(
        cls,
        head_path: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
        providers: list[str] | None = None,
        taxonomy: Taxonomy | None = None,
    ) -> ImageClassifier:
        """Loads the head (default: the shipped artifact), the taxonomy (default: the shipped one)
        and the ONNX backbone from ``cache_dir`` (exporting it there first if missing, which needs
        torch; see ``backbone.ensure_onnx``). Raises ``ArtifactError`` for a bad or mismatched head.
        """
        head = LinearHead.load(head_path)
        backbone = OnnxBackbone(ensure_onnx(cache_dir), num_threads=num_threads, providers=providers)
        return cls(head=head, taxonomy=taxonomy or load_taxonomy(), backbone=backbone)

    def domain_gate(self, embeddings: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Probability that each photo belongs to the head's domain, float64 (N,)."""
        evidence = self.zero_shot.domain_evidence(np.atleast_2d(logits), self._domain_mask)
        return self._gate(self.head.centroid_similarity(np.atleast_2d(embeddings)), evidence)[0]

    def _gate(self, similarity: np.ndarray, evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gate = self.head.gate
        resemblance = _sigmoid(gate.cosine_weight * (similarity - gate.cosine_threshold))
        return 1.0 - (1.0 - np.clip(evidence, 0.0, 1.0)) * (1.0 - resemblance), resemblance

    def scores_from_outputs(self, embeddings: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Confidence of every taxonomy category from backbone outputs.

        ``embeddings`` (N, 1280), ``logits`` (N, 1000), float32 as returned by ``OnnxBackbone.run``
        or float16 as cached (``classifier.outputs``) from an earlier run of the same backbone
        version; each is converted once, here.
        Returns float64 (N, K), columns in ``self.slugs`` (taxonomy order); each row sums to ≤ 1.
        """
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        mass = self.zero_shot.exclusive_mass(np.atleast_2d(logits))
        mapped = mass.sum(axis=1)
        shares = mass / np.maximum(mapped, 1e-12)[:, None]
        domain_share = shares[:, self._domain_mask].sum(axis=1)
        reach = np.minimum(1.0, mapped / MAPPED_MASS_FLOOR)
        probabilities, similarity = self.head.proba_and_similarity(embeddings)
        gate, resemblance = self._gate(similarity, domain_share * reach)
        # A photo that looks like the head's training photos is one of its classes, whatever
        # ImageNet thinks (hats look like purses to it); only the rest is left to bags and the like.
        uncovered = shares[:, self._uncovered_mask] * (1.0 - resemblance)[:, None]
        uncovered_fraction = uncovered.sum(axis=1) / np.maximum(domain_share, 1e-12)
        uncovered_fraction = np.minimum(uncovered_fraction, 1.0)
        outside = shares[:, self._outside_mask]
        outside_total = np.maximum(outside.sum(axis=1), 1e-12)

        scores = np.zeros((len(embeddings), len(self.slugs)), dtype=np.float64)
        head_share = gate * (1.0 - uncovered_fraction)
        scores[:, self._head_columns] = head_share[:, None] * probabilities
        uncovered_share = gate * uncovered_fraction / np.maximum(uncovered.sum(axis=1), 1e-12)
        scores[:, self._uncovered_mask] = uncovered_share[:, None] * uncovered
        outside_share = (1.0 - gate) * reach / outside_total
        scores[:, self._outside_mask] = outside_share[:, None] * outside
        return scores

    def top_k_from_scores(self, scores: np.ndarray, top_k: int = 5) -> list[list[CategoryScore]]:
        """Top-k ``CategoryScore`` lists, most confident first, from ``scores_from_outputs`` rows."""
        keep = max(1, min(top_k, len(self.slugs)))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        return [
            [CategoryScore(self.slugs[column], float(row[column])) for column in columns]
            for row, columns in zip(scores, order, strict=True)
        ]

    def view_batch(self, images: Sequence[Image.Image], views: Sequence[int]) -> np.ndarray:
        """The head's views at indices ``views`` of RGB ``images``: float32 (len(views) × N, 3,
        224, 224), view-major (``preprocess.to_batch`` for each view in turn)."""
        return np.concatenate(
            [
                to_batch(images, resize_ratio=view.resize_ratio, mirror=view.mirror)
                for view in (self.head.views[index] for index in views)
            ]
        )

    def run_views(
        self, first: np.ndarray, images: Callable[[Sequence[int]], Sequence[Image.Image]]
    ) -> ViewOutputs:
        """Backbone outputs and scores of a batch under ``view_policy``: ``first`` float32
        (N, 3, 224, 224) holds every photo's first view (``view_batch(images, [first_index])``);
        ``images(rows)`` returns the decoded photos at those rows of the batch when the policy
        wants their other views. Raises ``RuntimeError`` without a backbone."""
        backbone = self.backbone
        if backbone is None:
            raise RuntimeError("This classifier has no backbone; use scores_from_outputs().")
        count = len(self.head.views)
        first_index = self.view_policy.first_index(count)
        others = [index for index in range(count) if index != first_index]
        return run_views(
            first,
            lambda rows: self.view_batch(images(rows), others),
            view_count=count,
            run=backbone.run,
            score=self.scores_from_outputs,
            policy=self.view_policy,
        )

    def predictions(self, outputs: ViewOutputs, top_k: int, timings_ms: dict[str, float]) -> list[Prediction]:
        """One ``Prediction`` per row of ``outputs``, each with a copy of ``timings_ms``."""
        return [
            Prediction(
                top_k=top,
                model_version=self.model_version,
                embedding=embedding,
                logits=image_logits,
                timings_ms=dict(timings_ms),
                views=int(views),
            )
            for top, embedding, image_logits, views in zip(
                self.top_k_from_scores(outputs.scores, top_k),
                outputs.embeddings,
                outputs.logits,
                outputs.views,
                strict=True,
            )
        ]

    def predict(self, images: Sequence[Image.Image], top_k: int = 5) -> list[Prediction]:
        """Top-k categories for decoded images (any mode; converted to RGB).

        Runs the backbone on batches of at most 32 photos, with the head's views chosen by
        ``view_policy`` (outputs averaged over the views that ran). Returns one ``Prediction``
        per image, in order. Raises ``RuntimeError`` when the classifier was built without a
        backbone.
        """
        if self.backbone is None:
            raise RuntimeError("This classifier has no backbone; use scores_from_outputs().")
        predictions: list[Prediction] = []
        first_index = self.view_policy.first_index(len(self.head.views))
        for start in range(0, len(images), MAX_BATCH):
            chunk = images[start : start + MAX_BATCH]
            began = time.perf_counter()
            batch = self.view_batch(chunk, [first_index])
            prepared = time.perf_counter()
            outputs = self.run_views(batch, _rows_of(chunk))
            inferred = time.perf_counter()
            share = 1000.0 / len(chunk)
            timings = {
                "preprocess_ms": (prepared - began) * share,
                "inference_ms": (inferred - prepared) * share,
            }
            predictions.extend(self.predictions(outputs, top_k, timings))
        return predictions

    def classify(self, sources: Sequence[ImageSource], top_k: int = 5) -> list[Prediction | ImageRejected]:
        """Decodes and classifies photos given as bytes, paths or binary files.

        Returns, in order, a ``Prediction`` or, for a photo that cannot be decoded, the
        ``ImageRejected`` explaining why; one bad photo never fails the others.
        """
        results: list[Prediction | ImageRejected | None] = [None] * len(sources)
        decoded: list[Image.Image] = []
        positions: list[int] = []
        decode_ms: list[float] = []
        for position, source in enumerate(sources):
            began = time.perf_counter()
            try:
                decoded.append(load_image(source))
            except ImageRejected as rejection:
                results[position] = rejection
                continue
            positions.append(position)
            decode_ms.append((time.perf_counter() - began) * 1000.0)
        for position, prediction, milliseconds in zip(
            positions, self.predict(decoded, top_k=top_k), decode_ms, strict=True
        ):
            prediction.timings_ms = {"decode_ms": milliseconds, **prediction.timings_ms}
            results[position] = prediction
        return [result for result in results if result is not None]


def default_head_path() -> Path:
    """Path of the shipped head manifest."""
    from classifier.head import ARTIFACTS_DIR, DEFAULT_HEAD_VERSION

    return ARTIFACTS_DIR / f"{DEFAULT_HEAD_VERSION}.json"
