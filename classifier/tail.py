"""The backbone's tuned tail: its artifact and the network pieces that run it.

EfficientNet-Lite0 splits at MBConv block ``TAIL_START``: the trunk (stem and blocks 0–11) stays
as pretrained; the tail (blocks 12–15, the head convolution and its batch norm) can be tuned on
labelled photos (``classifier.training.tail``). A ``TailArtifact`` (``classifier/artifacts/<name>.npz``
+ ``.json``) holds the tuned weights and the SHA-256 of every photo they trained on;
``classifier.backbone`` builds the served network with it. torch is imported only to build.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifier.atomic import write_atomically
from classifier.head import ARTIFACTS_DIR, ArtifactError, artifact_manifest

if TYPE_CHECKING:
    import torch

#: The tail starts at this MBConv block (blocks 12–15 of EfficientNet-Lite0, at 7 × 7).
TAIL_START = 12
#: The trunk's output: (N, TRUNK_CHANNELS, TRUNK_SIDE, TRUNK_SIDE) for 224 px input.
TRUNK_CHANNELS = 192
TRUNK_SIDE = 7


@dataclass
class TailArtifact:
    """Tuned weights of the backbone's tail (``state``: parameter name → array, in the naming of
    ``tail_modules``), the SHA-256 of each photo it trained on, and how it was trained."""

    name: str
    state: dict[str, np.ndarray]
    trained_on: frozenset[str] = field(default_factory=frozenset)
    recipe: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def save(self, directory: str | os.PathLike[str] = ARTIFACTS_DIR) -> Path:
        """Writes ``<name>.npz`` (float16 weights, float32 batch-norm statistics) and
        ``<name>.json`` (recipe, photo hashes, the ``.npz`` SHA-256); returns the JSON path."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        arrays = {
            key: value.astype(np.float32 if "running" in key else np.float16)
            for key, value in sorted(self.state.items())
            if not key.endswith("num_batches_tracked")
        }
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        payload = buffer.getvalue()
        self.sha256 = hashlib.sha256(payload).hexdigest()
        write_atomically(target / f"{self.name}.npz", payload)
        manifest = {
            "name": self.name,
            "tail_start": TAIL_START,
            "recipe": self.recipe,
            "npz_sha256": self.sha256,
            "trained_on_sha256": sorted(self.trained_on),
        }
        return write_atomically(target / f"{self.name}.json", json.dumps(manifest, indent=1) + "\n")

    @classmethod
    def load(
        cls, name: str | os.PathLike[str], directory: str | os.PathLike[str] = ARTIFACTS_DIR
    ) -> TailArtifact:
        """Reads ``<directory>/<name>.json`` and ``.npz`` (or a path to either). Raises
        ``ArtifactError`` when a file is missing or the ``.npz`` fails its checksum."""
        base = Path(name) if os.sep in str(name) else Path(directory) / str(name)
        manifest, npz_path = artifact_manifest(base, "Backbone tail")
        payload = npz_path.read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != manifest.get("npz_sha256"):
            raise ArtifactError(f"Checksum mismatch for {npz_path}: the artifact is corrupt.")
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            state = {key: arrays[key].astype(np.float32) for key in arrays.files}
        return cls(
            name=manifest["name"],
            state=state,
            trained_on=frozenset(manifest.get("trained_on_sha256", [])),
            recipe=manifest.get("recipe", {}),
            sha256=digest,
        )


def tail_modules(network: Any) -> torch.nn.ModuleDict:
    """The tail of an ``efficientnet_lite_pytorch`` network as a ModuleDict (``blocks``, ``head``,
    ``bn``): the parameter naming of ``TailArtifact.state``. Shares the network's modules."""
    import torch

    return torch.nn.ModuleDict(
        {
            "blocks": torch.nn.ModuleList(network._blocks[TAIL_START:]),
            "head": network._conv_head,
            "bn": network._bn1,
        }
    )


def trunk_forward(network: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Stem and blocks before the tail: (N, 3, H, W) → (N, 192, H/32, W/32)."""
    x = network._swish(network._bn0(network._conv_stem(pixels)))
    for block in network._blocks[:TAIL_START]:
        x = block(x)
    return x


def tail_forward(
    tail: torch.nn.ModuleDict, x: torch.Tensor, *, drop_connect: float | None = None
) -> torch.Tensor:
    """Tail blocks, head convolution, batch norm, ReLU6, global average pool: → (N, 1280)."""
    import torch

    blocks: Any = tail["blocks"]
    for offset, block in enumerate(blocks):
        rate = None if drop_connect is None else drop_connect * float(TAIL_START + offset) / 16
        x = block(x, drop_connect_rate=rate)
    return torch.nn.functional.relu6(tail["bn"](tail["head"](x))).mean(dim=(2, 3))
