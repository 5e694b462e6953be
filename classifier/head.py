"""The trained head: a linear softmax classifier on backbone embeddings, with its gate statistics.

An artifact is two files in one directory: ``<version>.npz`` (arrays) and ``<version>.json``
(everything else, including the SHA-256 of the ``.npz``, checked on load). numpy and stdlib only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier.atomic import write_atomically
from classifier.autoaccept import AutoAcceptPolicy
from classifier.preprocess import CENTRE_VIEW, View

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
DEFAULT_HEAD_VERSION = "fashion-linear-v3"
FEATURE_TRANSFORMS = ("none", "l2", "sqrt-l2")


class ArtifactError(ValueError):
    """A head artifact is missing, inconsistent or fails its checksum."""


def artifact_manifest(base: Path, kind: str) -> tuple[dict[str, Any], Path]:
    """An artifact's manifest and the path of its arrays: ``<base>.json`` and ``<base>.npz``
    (``base`` may name either file). ``kind`` names it in errors ("Head", "Backbone tail").
    Raises ``ArtifactError`` when either file is missing."""
    if base.suffix in (".json", ".npz"):
        base = base.with_suffix("")
    json_path, npz_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".npz")
    if not json_path.is_file() or not npz_path.is_file():
        raise ArtifactError(f"{kind} artifact not found: expected {json_path} and {npz_path}.")
    return json.loads(json_path.read_text(encoding="utf-8")), npz_path


def transform_embeddings(embeddings: np.ndarray, transform: str) -> np.ndarray:
    """Applies the head's feature transform to float32 (N, 1280) embeddings.

    ``none``: as is. ``l2``: unit length rows. ``sqrt-l2``: element-wise square root (the pooled
    ReLU6 features are non-negative), then unit length; it evens out a few dominant channels, which
    suits a linear classifier. Returns float32 (N, 1280).
    """
    values = np.asarray(embeddings, dtype=np.float32)
    if transform == "none":
        return values
    if transform == "sqrt-l2":
        values = np.maximum(values, np.float32(0.0))  # a new array: the steps below work in place
        np.sqrt(values, out=values)
        values /= np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
        return values
    if transform != "l2":
        raise ValueError(f"Unknown feature transform {transform!r}; expected one of {FEATURE_TRANSFORMS}.")
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``; float64 in, same shape out."""
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / np.sum(exponentials, axis=axis, keepdims=True)


@dataclass(frozen=True)
class GateParameters:
    """How likely a photo lies inside the head's domain, from two signals, either one sufficing.

    ``g = 1 − (1 − m) · (1 − sigmoid(cosine_weight · (cosine − cosine_threshold)))``, where ``m`` is
    the zero-shot share of mapped ImageNet mass on the domain and ``cosine`` the highest cosine
    similarity between the transformed embedding and a class centroid. The zero-shot share catches
    domain photos unlike the training photos (a product shot of a sandal); the similarity catches
    training-like photos that ImageNet has no class for (a shirt on a hanger). Fit on training
    photos only (see ``classifier.training.gate``).
    """

    cosine_threshold: float
    cosine_weight: float


@dataclass
class LinearHead:
    """Softmax classifier over ``classes`` (category slugs) on transformed embeddings.

    ``weights`` float32 (C, 1280), ``bias`` float32 (C,), ``centroids`` float32 (C, 1280) unit-length
    class means of transformed training embeddings; ``temperature`` divides the logits
    (calibration, fit to minimise held-out negative log-likelihood). ``views``: the crops whose
    backbone outputs are averaged into one embedding, in training and at prediction alike.
    ``auto_accept``: the per-category thresholds above which a suggestion sets a listing's
    category (``classifier.autoaccept``), stored in the manifest and copied into the registry.
    """

    version: str
    backbone_version: str
    classes: list[str]
    weights: np.ndarray
    bias: np.ndarray
    centroids: np.ndarray
    temperature: float
    feature_transform: str
    gate: GateParameters
    views: tuple[View, ...] = (CENTRE_VIEW,)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    auto_accept: AutoAcceptPolicy = field(default_factory=lambda: AutoAcceptPolicy(target_precision=None))

    def __post_init__(self) -> None:
        count = len(self.classes)
        if self.weights.shape[0] != count or self.bias.shape != (count,):
            raise ArtifactError(
                f"Head {self.version!r}: {count} classes but weights {self.weights.shape}, "
                f"bias {self.bias.shape}."
            )
        if self.centroids.shape != self.weights.shape:
            raise ArtifactError(f"Head {self.version!r}: centroids shape {self.centroids.shape}.")
        if self.feature_transform not in FEATURE_TRANSFORMS:
            raise ArtifactError(f"Head {self.version!r}: unknown transform {self.feature_transform!r}.")

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Uncalibrated class scores, float64 (N, C), for raw embeddings (N, 1280)."""
        features = transform_embeddings(embeddings, self.feature_transform).astype(np.float64)
        return features @ self.weights.T.astype(np.float64) + self.bias.astype(np.float64)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, float64 (N, C), rows sum to 1, columns in ``classes``."""
        return softmax(self.logits(embeddings) / self.temperature)

    def centroid_similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """Highest cosine similarity to a class centroid, float64 (N,), in [−1, 1]."""
        features = transform_embeddings(embeddings, self.feature_transform)
        if self.feature_transform == "none":
            features = transform_embeddings(features, "l2")
        return np.max(features.astype(np.float64) @ self.centroids.T.astype(np.float64), axis=1)

    def proba_and_similarity(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(predict_proba(embeddings), centroid_similarity(embeddings))`` with the feature
        transform applied once and one matrix product against the weights and centroids stacked
        (the head-only path scores tens of thousands of photos a second with both)."""
        features = transform_embeddings(embeddings, self.feature_transform)
        if self.feature_transform == "none":
            return self.predict_proba(embeddings), self.centroid_similarity(embeddings)
        count = len(self.classes)
        # float32 products of unit-length features (1e-6 relative), then float64 from there on.
        stacked = np.concatenate([self.weights, self.centroids]).T.astype(np.float32)
        products = (features @ stacked).astype(np.float64)
        logits = products[:, :count] + self.bias.astype(np.float64)
        return softmax(logits / self.temperature), np.max(products[:, count:], axis=1)

    def to_bytes(self) -> tuple[dict[str, Any], bytes]:
        """The artifact in memory: ``(manifest, npz_bytes)``, the contents of the ``.json`` and
        ``.npz`` files that ``save`` writes (the manifest records the ``.npz`` SHA-256). This is
        what a model registry stores, so workers on other machines can load the head."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            weights=self.weights.astype(np.float32),
            bias=self.bias.astype(np.float32),
            centroids=self.centroids.astype(np.float32),
        )
        payload = buffer.getvalue()
        manifest = {
            "version": self.version,
            "backbone_version": self.backbone_version,
            "classes": self.classes,
            "feature_transform": self.feature_transform,
            "temperature": self.temperature,
            "gate": asdict(self.gate),
            "views": [asdict(view) for view in self.views],
            "hyperparameters": self.hyperparameters,
            "metrics": self.metrics,
            "auto_accept": self.auto_accept.to_dict(),
            "npz_sha256": hashlib.sha256(payload).hexdigest(),
        }
        return manifest, payload

    @classmethod
    def from_bytes(cls, manifest: dict[str, Any], payload: bytes) -> LinearHead:
        """A head from ``to_bytes`` output (or the two files' contents). Raises ``ArtifactError``
        when ``payload`` does not match the SHA-256 the manifest records, or a field is missing."""
        actual = hashlib.sha256(payload).hexdigest()
        if actual != manifest.get("npz_sha256"):
            raise ArtifactError(
                f"Checksum mismatch for head {manifest.get('version')!r}: the manifest records "
                f"{manifest.get('npz_sha256')}, the arrays have {actual}. "
                "The artifact is corrupt or its two parts come from different trainings."
            )
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
                weights, bias, centroids = arrays["weights"], arrays["bias"], arrays["centroids"]
            return cls(
                version=manifest["version"],
                backbone_version=manifest["backbone_version"],
                classes=list(manifest["classes"]),
                weights=weights,
                bias=bias,
                centroids=centroids,
                temperature=float(manifest["temperature"]),
                feature_transform=manifest["feature_transform"],
                gate=GateParameters(**manifest["gate"]),
                views=tuple(View(**view) for view in manifest.get("views", [asdict(CENTRE_VIEW)])),
                hyperparameters=manifest.get("hyperparameters", {}),
                metrics=manifest.get("metrics", {}),
                auto_accept=AutoAcceptPolicy.from_manifest(manifest),
            )
        except (KeyError, TypeError) as error:
            raise ArtifactError(f"Head {manifest.get('version')!r}: malformed artifact ({error}).") from error

    def save(self, directory: str | os.PathLike[str] = ARTIFACTS_DIR) -> Path:
        """Writes ``<directory>/<version>.npz`` (float32 arrays) and ``<version>.json`` (manifest with
        the ``.npz`` SHA-256); returns the JSON path. Overwrites an artifact of the same version."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        manifest, payload = self.to_bytes()
        write_atomically(target / f"{self.version}.npz", payload)
        return write_atomically(
            target / f"{self.version}.json", json.dumps(manifest, indent=2, sort_keys=False) + "\n"
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> LinearHead:
        """Reads a head from its ``.json`` (or ``.npz``, or the path without suffix).

        Default: the shipped ``classifier/artifacts/<DEFAULT_HEAD_VERSION>``. Raises
        ``ArtifactError`` when a file is missing or the ``.npz`` does not match the recorded SHA-256.
        """
        base = Path(path) if path is not None else ARTIFACTS_DIR / DEFAULT_HEAD_VERSION
        manifest, npz_path = artifact_manifest(base, "Head")
        try:
            return cls.from_bytes(manifest, npz_path.read_bytes())
        except ArtifactError as error:
            if "Checksum mismatch" in str(error):
                raise ArtifactError(
                    f"Checksum mismatch for {npz_path}: the manifest records "
                    f"{manifest.get('npz_sha256')}, the file has "
                    f"{hashlib.sha256(npz_path.read_bytes()).hexdigest()}. "
                    "The artifact is corrupt or its two files come from different trainings."
                ) from error
            raise
