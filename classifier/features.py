"""Backbone outputs for a folder of labelled photos, cached on disk.

A labelled folder is ``ROOT/<category-slug>/**/<photo>``. Extraction decodes every photo, runs the
backbone in batches and keeps embeddings and ImageNet logits; the result is cached as an ``.npz`` in
the cache directory, keyed by the backbone version and the SHA-256 of every file, so a re-run on
unchanged photos is a file read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.atomic import atomic_path
from classifier.backbone import OnnxBackbone
from classifier.preprocess import CENTRE_VIEW, ImageRejected, View, load_image

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
BATCH_SIZE = 32


@dataclass(frozen=True)
class LabelledPhoto:
    """A photo file and the category slug of the folder it lies in."""

    path: Path
    label: str


@dataclass
class LabelledFeatures:
    """Backbone outputs for labelled photos, row-aligned.

    ``embeddings`` float32 (N, 1280); ``logits`` float32 (N, 1000); ``labels`` and ``paths`` length N.
    Photos that failed to decode are listed in ``rejected`` and have no row.
    """

    embeddings: np.ndarray
    logits: np.ndarray
    labels: list[str]
    paths: list[str]
    rejected: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def concatenate(parts: list[LabelledFeatures]) -> LabelledFeatures:
        """Stacks several feature sets, in order."""
        return LabelledFeatures(
            embeddings=np.concatenate([p.embeddings for p in parts]),
            logits=np.concatenate([p.logits for p in parts]),
            labels=[label for p in parts for label in p.labels],
            paths=[path for p in parts for path in p.paths],
            rejected=[item for p in parts for item in p.rejected],
        )


def list_labelled_photos(root: str | os.PathLike[str]) -> list[LabelledPhoto]:
    """Photos under ``root/<slug>/`` (any depth), sorted by path; the slug is the label.

    Files are chosen by suffix only to skip stray non-photo files (README, .DS_Store); decoding
    still decides by content. Raises ``FileNotFoundError`` when ``root`` is not a directory.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"Photo folder not found: {base}")
    photos = []
    for category_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(category_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES:
                photos.append(LabelledPhoto(path=path, label=category_dir.name))
    return photos


def _cache_key(photos: list[LabelledPhoto], root: Path, backbone: OnnxBackbone, views: Sequence[View]) -> str:
    # The file name tells an int8 network from the fp32 one it was quantized from (same version).
    digest = hashlib.sha256(f"{backbone.version};{backbone.path.name};{list(views)}".encode())
    for photo in photos:
        digest.update(f"{photo.label}\0{photo.path.relative_to(root)}\0".encode())
        digest.update(hashlib.sha256(photo.path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def extract_features(
    root: str | os.PathLike[str],
    backbone: OnnxBackbone,
    *,
    views: Sequence[View] = (CENTRE_VIEW,),
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelledFeatures:
    """Backbone outputs for every photo under ``root/<slug>/``.

    With ``cache_dir``, results are read from / written to
    ``<cache_dir>/features-<backbone sha>-<content key>.npz``; the key covers the backbone version
    and its file (an int8 network keeps its fp32 version), the ``views`` (outputs are averaged
    over them, see ``OnnxBackbone.embed``) and every file's bytes. ``progress(done, total)`` is
    called after each batch. Undecodable photos are reported in ``rejected``, not raised.
    """
    base = Path(root)
    photos = list_labelled_photos(base)
    cache_path: Path | None = None
    if cache_dir is not None:
        key = _cache_key(photos, base, backbone, views)
        tag = backbone.version.split("@")[-1]
        cache_path = Path(cache_dir) / f"features-{tag}-{key}.npz"
        if cache_path.is_file():
            with np.load(cache_path, allow_pickle=False) as cached:
                return LabelledFeatures(
                    embeddings=cached["embeddings"],
                    logits=cached["logits"],
                    labels=cached["labels"].tolist(),
                    paths=cached["paths"].tolist(),
                    rejected=[(str(path), str(reason)) for path, reason in cached["rejected"].tolist()],
                )
    embeddings, logits, labels, paths = [], [], [], []
    rejected: list[tuple[str, str]] = []
    for start in range(0, len(photos), BATCH_SIZE):
        chunk = photos[start : start + BATCH_SIZE]
        images = []
        for photo in chunk:
            try:
                images.append(load_image(photo.path))
            except ImageRejected as error:
                rejected.append((str(photo.path), error.reason))
                continue
            labels.append(photo.label)
            paths.append(str(photo.path))
        if images:
            batch_embeddings, batch_logits = backbone.embed(images, views)
            embeddings.append(batch_embeddings)
            logits.append(batch_logits)
        if progress is not None:
            progress(min(start + BATCH_SIZE, len(photos)), len(photos))
    features = LabelledFeatures(
        embeddings=np.concatenate(embeddings) if embeddings else np.zeros((0, 1280), np.float32),
        logits=np.concatenate(logits) if logits else np.zeros((0, 1000), np.float32),
        labels=labels,
        paths=paths,
        rejected=rejected,
    )
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path) as temporary, open(temporary, "wb") as out:
            np.savez(
                out,
                embeddings=features.embeddings,
                logits=features.logits,
                labels=np.array(labels, dtype=str),
                paths=np.array(paths, dtype=str),
                rejected=np.array(rejected, dtype=str).reshape(-1, 2),
            )
    return features
