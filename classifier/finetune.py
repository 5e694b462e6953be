"""Fine-tuning the backbone's last blocks on labelled photos, cheaply: ``python -m classifier finetune``.

The frozen trunk (stem and MBConv blocks 0–11) runs once per photo on ``AUGMENTED_VIEWS`` random
crops, and its activations (192 × 7 × 7 per view, float16) are cached on disk; only the tail
(blocks 12–15, the head convolution and its batch norm) trains, with a new linear classifier, on
those cached activations. One pass over the cached views is about as many epochs as views.

Recipe (after MODEL-FACTS: 4 epochs of the last 4 blocks reached 0.930 on full images): random
resized crops (scale 0.6–1, aspect 3/4–4/3) mirrored half the time, activation maps mirrored half
the time again, AdamW with a one-cycle schedule peaking at 1e-3, batch 32, label smoothing 0.1,
dropout 0.2 before the classifier, the network's own stochastic depth; ``SOUP_SEEDS`` such tails
averaged. Deterministic (seeded).

The result is a ``TailArtifact`` (``classifier/artifacts/<name>.npz`` + ``.json``): the tail's
weights and the SHA-256 of every photo it trained on. ``classifier.backbone`` builds the served
network with it: the embedding goes through the tuned tail, the ImageNet logits through the
original one (zero-shot scoring needs them unchanged). Heads are then fitted on the tuned
embeddings; photos the tail trained on give over-confident embeddings, so they are left out of
calibration (``classifier.retrain``'s ``calibration`` rows).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from classifier.preprocess import INPUT_SIZE, load_image

if TYPE_CHECKING:
    import torch

from classifier.head import ARTIFACTS_DIR, ArtifactError

#: The tail starts at this MBConv block (blocks 12–15 of EfficientNet-Lite0, at 7 × 7).
TAIL_START = 12
TRUNK_CHANNELS = 192
TRUNK_SIDE = 7
AUGMENTED_VIEWS = 4
CROP_SCALE = (0.6, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
SEED = 0
#: Tails trained from the same start with this many seeds are averaged weight by weight (a "model
#: soup"); inference costs the same. The shipped fashion-tail-v1 is a soup of 2, a number first
#: picked on clothing-small/test; docs/BENCHMARKS.md ("Choosing on validation") re-examines it on
#: validation/, which alone may choose settings.
SOUP_SEEDS = 2


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
        (target / f"{self.name}.npz").write_bytes(payload)
        manifest = {
            "name": self.name,
            "tail_start": TAIL_START,
            "recipe": self.recipe,
            "npz_sha256": self.sha256,
            "trained_on_sha256": sorted(self.trained_on),
        }
        path = target / f"{self.name}.json"
        path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(
        cls, name: str | os.PathLike[str], directory: str | os.PathLike[str] = ARTIFACTS_DIR
    ) -> TailArtifact:
        """Reads ``<directory>/<name>.json`` and ``.npz`` (or a path to either). Raises
        ``ArtifactError`` when a file is missing or the ``.npz`` fails its checksum."""
        base = Path(name) if os.sep in str(name) else Path(directory) / str(name)
        if base.suffix in (".json", ".npz"):
            base = base.with_suffix("")
        json_path, npz_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".npz")
        if not json_path.is_file() or not npz_path.is_file():
            raise ArtifactError(f"Backbone tail artifact not found: expected {json_path} and {npz_path}.")
        manifest = json.loads(json_path.read_text(encoding="utf-8"))
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


def _random_crop(image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = float(np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1]))))
        crop_w, crop_h = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
            break
    else:
        crop_w = crop_h = min(width, height)
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
    resized = image.resize(
        (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h)
    )
    pixels = np.asarray(resized, dtype=np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)


def augmented_batch(images: Sequence[Image.Image], seeds: Sequence[int], views: int) -> np.ndarray:
    """``views`` random crops of each image, view-major: float32 (views × N, 3, 224, 224). Crop
    ``k`` of an image depends only on its seed and ``k``."""
    return np.stack(
        [
            _random_crop(image, np.random.default_rng([seed, view]))
            for view in range(views)
            for image, seed in zip(images, seeds, strict=True)
        ]
    )


def trunk_onnx(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The frozen trunk exported to ONNX in the cache (built once, needs torch)."""
    import warnings

    import torch

    from classifier.backbone import _pretrained_network, default_cache_dir, weights_key

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / f"efficientnet-lite0-trunk{TAIL_START}-{weights_key()[:12]}.onnx"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    network = _pretrained_network()

    class Trunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return trunk_forward(self.network, pixels)

    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".onnx.tmp")
    os.close(handle)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Trunk().eval(),
                (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),),
                temporary,
                input_names=["input"],
                output_names=["activations"],
                dynamic_axes={"input": {0: "batch"}, "activations": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def cached_activations(
    paths: Sequence[Path],
    *,
    views: int = AUGMENTED_VIEWS,
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """Trunk activations of ``views`` random crops of each photo: float16 (views, N, 192, 7, 7).

    Cached in ``<cache_dir>/trunk-activations-<key>.npy``, the key covering the trunk, the crop
    recipe and every file's bytes: the trunk runs once per photo and view, ever.
    """
    import onnxruntime

    from classifier.backbone import default_cache_dir

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    onnx_path = trunk_onnx(directory)
    digest = hashlib.sha256(f"{onnx_path.name};{views};{CROP_SCALE};{CROP_RATIO};{SEED}".encode())
    hashes = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths]
    for value in hashes:
        digest.update(value.encode())
    target = directory / f"trunk-activations-{digest.hexdigest()[:16]}.npy"
    if target.is_file():
        return np.load(target)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or os.cpu_count() or 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    result = np.zeros((views, len(paths), TRUNK_CHANNELS, TRUNK_SIDE, TRUNK_SIDE), dtype=np.float16)
    began = time.perf_counter()
    for start in range(0, len(paths), 16):
        chunk = list(range(start, min(start + 16, len(paths))))
        images = [load_image(paths[i]) for i in chunk]
        seeds = [int(hashes[i][:8], 16) for i in chunk]
        (activations,) = session.run(["activations"], {"input": augmented_batch(images, seeds, views)})
        result[:, chunk] = activations.reshape(views, len(chunk), TRUNK_CHANNELS, TRUNK_SIDE, TRUNK_SIDE)
        if start % 640 == 0:
            log(
                f"  trunk activations {start + len(chunk)}/{len(paths)} ({time.perf_counter() - began:.0f} s)"
            )
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".npy.tmp")
    os.close(handle)
    try:
        with open(temporary, "wb") as out:
            np.save(out, result)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return result


def train_tail(
    activations: np.ndarray,
    targets: np.ndarray,
    classes: int,
    *,
    passes: float = 1.0,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    seed: int = SEED,
    num_threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, np.ndarray]:
    """Trains the tail and a new linear classifier on cached trunk activations
    (views, N, 192, 7, 7) with labels ``targets`` (N,) in [0, classes). Returns the tail's
    state (see ``tail_modules``) as float32 arrays; the classifier is discarded (heads are fitted
    on the tuned embeddings afterwards)."""
    import torch

    from classifier.backbone import _pretrained_network

    torch.manual_seed(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    network = _pretrained_network()
    tail = tail_modules(network)
    classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, classes))
    parameters = [*tail.parameters(), *classifier.parameters()]
    views, count = activations.shape[:2]
    # (at least 8 steps: the one-cycle schedule needs a warm-up and a decay)
    steps = max(8, int(views * count * passes) // batch_size)
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=learning_rate, total_steps=steps, pct_start=0.25
    )
    rng = np.random.default_rng(seed)
    pairs = np.stack(np.meshgrid(np.arange(views), np.arange(count), indexing="ij"), axis=-1).reshape(-1, 2)
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(int(np.ceil(passes)) or 1)])
    labels = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    tail.train()
    classifier.train()
    began = time.perf_counter()
    for step in range(steps):
        chosen = pairs[order[step * batch_size : (step + 1) * batch_size]]
        batch = torch.from_numpy(activations[chosen[:, 0], chosen[:, 1]].astype(np.float32))
        mirror = torch.from_numpy(rng.random(len(chosen)) < 0.5)
        batch[mirror] = batch[mirror].flip(-1)
        logits = classifier(tail_forward(tail, batch, drop_connect=0.2))
        loss = torch.nn.functional.cross_entropy(logits, labels[chosen[:, 1]], label_smoothing=0.1)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            log(f"  step {step}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - began:.0f} s)")
    return {key: value.detach().numpy().copy() for key, value in tail.state_dict().items()}


@dataclass
class FinetuneReport:
    """What ``finetune`` produced: the tail and head artifacts, test figures, phase seconds."""

    tail: TailArtifact
    head_manifest: Path
    test: dict[str, Any]
    seconds: dict[str, float]


def finetune(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    tail_name: str = "fashion-tail-v1",
    head_version: str = "fashion-linear-v3",
    out_dir: str | os.PathLike[str] = ARTIFACTS_DIR,
    cache_dir: str | os.PathLike[str] | None = None,
    views: int = AUGMENTED_VIEWS,
    passes: float = 1.0,
    seeds: int = SOUP_SEEDS,
    precision: float = 0.97,
    head_only: bool = False,
    log: Callable[[str], None] = print,
) -> FinetuneReport:
    """The whole recipe on ``data_dir/{train,validation,test}`` (default: clothing-small beside
    the repository): tune the tail on ``train/`` (see the module docstring), build the tuned
    backbone, fit a head on the tuned embeddings of ``train/`` + ``validation/`` with
    ``validation/`` alone calibrating (the tail never saw it), measure it on ``test/``, and write
    both artifacts to ``out_dir``. The head is fitted on the int8 backbone's embeddings, as
    workers serve it; validation/ alone picks C and sets the temperature, the gate and the
    auto-accept thresholds (out of fold), and test/ only reports. ``head_only``: keep the tail
    already in ``out_dir`` and only fit the head again. Raises ``FileNotFoundError`` for a
    missing split folder."""
    from classifier.features import list_labelled_photos
    from classifier.train import DEFAULT_DATA_DIR, SPLITS

    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    for split in SPLITS:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"Training data not found: {root / split} is missing.")
    began = time.perf_counter()
    photos = list_labelled_photos(root / "train")
    classes = sorted({photo.label for photo in photos})
    targets = np.array([classes.index(photo.label) for photo in photos])
    if head_only:
        tail = TailArtifact.load(tail_name, out_dir)
        cached = tuned = time.perf_counter()
        return _fit_head(
            tail,
            Path(out_dir) / tail_name,
            root,
            head_version,
            out_dir,
            cache_dir,
            precision,
            log,
            began,
            cached,
            tuned,
        )
    activations = cached_activations([p.path for p in photos], views=views, cache_dir=cache_dir, log=log)
    cached = time.perf_counter()
    log(f"trunk activations of {len(photos)} photos × {views} views in {cached - began:.0f} s")
    states = [
        train_tail(activations, targets, len(classes), passes=passes, seed=seed, log=log)
        for seed in range(seeds)
    ]
    state = {key: np.mean([s[key].astype(np.float64) for s in states], axis=0) for key in states[0]}
    tuned = time.perf_counter()
    log(f"tail trained in {tuned - cached:.0f} s")
    recipe = {
        "tail_start_block": TAIL_START,
        "views": views,
        "passes": passes,
        "soup_of_seeds": seeds,
        "crop_scale": list(CROP_SCALE),
        "optimiser": "AdamW one-cycle, peak 1e-3, batch 32, weight decay 0.01",
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "classes": classes,
        "photos": len(photos),
        "data": f"{root.name}/train",
    }
    hashes = frozenset(hashlib.sha256(p.path.read_bytes()).hexdigest() for p in photos)
    tail = TailArtifact(name=tail_name, state=state, trained_on=hashes, recipe=recipe)
    tail_path = tail.save(out_dir)
    return _fit_head(
        tail,
        tail_path.with_suffix(""),
        root,
        head_version,
        out_dir,
        cache_dir,
        precision,
        log,
        began,
        cached,
        tuned,
    )


def _fit_head(
    tail: TailArtifact,
    tail_base: Path,
    root: Path,
    head_version: str,
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    precision: float,
    log: Callable[[str], None],
    began: float,
    cached: float,
    tuned: float,
) -> FinetuneReport:
    from classifier.backbone import OnnxBackbone, _export_key, _tail_sha, default_cache_dir, ensure_onnx
    from classifier.calibration import evaluation_metrics
    from classifier.features import LabelledFeatures, extract_features
    from classifier.quantize import ensure_quantized
    from classifier.retrain import LabelledOutputs, score_head, train_candidate
    from classifier.taxonomy import load_taxonomy
    from classifier.train import SPLITS, TRAINING_VIEWS

    _tail_sha.cache_clear()
    _export_key.cache_clear()
    tail_ref = str(tail_base)
    features_cache = cache_dir if cache_dir is not None else default_cache_dir()
    # The head learns from, and is calibrated and measured on, what workers serve: int8.
    ensure_onnx(cache_dir, tail=tail_ref)
    backbone = OnnxBackbone(ensure_quantized(cache_dir, views=TRAINING_VIEWS, tail=tail_ref))
    features = {
        split: extract_features(root / split, backbone, views=TRAINING_VIEWS, cache_dir=features_cache)
        for split in SPLITS
    }
    fit = LabelledFeatures.concatenate([features["train"], features["validation"]])
    data = LabelledOutputs(fit.embeddings, fit.logits, fit.labels, list(range(len(fit))))
    # Only validation/ (which the tail never saw) picks C and sets the temperature, the gate and
    # the thresholds, from out-of-fold predictions; test/ only reports.
    unbiased = np.array([i >= len(features["train"]) for i in range(len(fit))])
    taxonomy = load_taxonomy()
    candidate = train_candidate(
        data,
        np.zeros(len(fit), bool),
        taxonomy=taxonomy,
        backbone_version=backbone.version,
        version=head_version,
        views=TRAINING_VIEWS,
        precision=precision,
        calibration=unbiased,
        log=log,
    )
    head = candidate.head
    head.auto_accept = replace(
        head.auto_accept,
        calibration=f"out-of-fold predictions on {root.name}/validation ({int(unbiased.sum())} photos "
        "the tail never saw), int8 backbone",
    )
    test_features = features["test"]
    test = LabelledOutputs(
        test_features.embeddings, test_features.logits, test_features.labels, list(range(len(test_features)))
    )
    predicted, confidence = score_head(head, taxonomy, test)
    figures = evaluation_metrics(
        test.labels, predicted, confidence, classes=head.classes, thresholds=head.auto_accept.thresholds
    )
    summary_keys = ("n", "accuracy", "macro_f1", "ece", "auto_accept")
    head.metrics = {
        f"{root.name}/validation (out-of-fold, chose the settings)": candidate.metrics["cross_validated"],
        f"{root.name}/test": {key: figures[key] for key in summary_keys},
        "held_out": figures,
    }
    head.hyperparameters["backbone_tail"] = tail.name
    head_manifest = head.save(out_dir)
    finished = time.perf_counter()
    seconds = {
        "activations": round(cached - began, 1),
        "tail": round(tuned - cached, 1),
        "head": round(finished - tuned, 1),
        "total": round(finished - began, 1),
    }
    log(f"{root.name}/test: {head.metrics[f'{root.name}/test']}; {seconds}")
    return FinetuneReport(tail=tail, head_manifest=head_manifest, test=figures, seconds=seconds)
