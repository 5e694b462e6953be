"""Damage done to copies of the model cache: a truncated file, scrambled weights behind a
rewritten checksum, a manifest that cannot be written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from classifier import integrity


def copy_cache(source: Path, target: Path) -> Path:
    """Copy every ONNX file and manifest of the cache folder `source` into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix in {".onnx", ".json"} and not path.name.startswith("."):
            shutil.copy2(path, target / path.name)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut the file to `keep` of its size (a full disk, a killed copy)."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def scramble_weights(path: Path) -> None:
    """Shuffle the values of the ONNX model's largest weight tensor; the graph stays valid."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda tensor: int(np.prod(tensor.dims)))
    values = numpy_helper.to_array(largest).copy()
    np.random.default_rng(0).shuffle(values.reshape(-1))
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    onnx.save(model, str(path))


def rewrite_checksum(path: Path) -> None:
    """Make the manifest's checksum and size agree with the file as it is now (as a careless
    fix would): only the smoke inference can then tell a damaged file."""
    manifest = integrity.manifest_path(path)
    data = json.loads(manifest.read_text())
    data["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    data["bytes"] = path.stat().st_size
    manifest.write_text(json.dumps(data))


def block_manifest(path: Path) -> None:
    """Put a directory where the file's manifest goes, so no rebuild can record it (standing for
    a read-only or full cache volume)."""
    manifest = integrity.manifest_path(path)
    manifest.unlink(missing_ok=True)
    manifest.mkdir()
