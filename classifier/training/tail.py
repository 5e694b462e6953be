"""Fine-tuning the backbone's last blocks on labelled photos, cheaply: ``python -m classifier finetune``.

Only the tail (blocks 12–15, the head convolution and its batch norm; ``classifier.tail``) trains,
with a new linear classifier, on cached trunk activations of augmented crops
(``classifier.training.activations``). One pass over the cached views is about as many epochs as
views.

Recipe (after MODEL-FACTS: 4 epochs of the last 4 blocks reached 0.930 on full images): random
resized crops mirrored half the time, activation maps mirrored half the time again, AdamW with a
one-cycle schedule peaking at 1e-3, batch 32, label smoothing 0.1, dropout 0.2 before the
classifier, the network's own stochastic depth; ``SOUP_SEEDS`` such tails averaged.
Deterministic (seeded).

The result is a ``TailArtifact``: the tail's weights and the SHA-256 of every photo it trained
on. ``classifier.backbone`` builds the served network with it: the embedding goes through the
tuned tail, the ImageNet logits through the original one (zero-shot scoring needs them
unchanged). A head is then fitted on the tuned embeddings (``classifier.training.candidate``);
photos the tail trained on give over-confident embeddings, so they are left out of calibration.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifier.head import ARTIFACTS_DIR, DEFAULT_HEAD_VERSION
from classifier.tail import TAIL_START, TailArtifact, tail_forward, tail_modules
from classifier.training.activations import AUGMENTED_VIEWS, CROP_SCALE, SEED, cached_activations

if TYPE_CHECKING:
    import torch

#: Tails trained from the same start with this many seeds are averaged weight by weight (a "model
#: soup"); inference costs the same. The shipped fashion-tail-v1 is a soup of 2, a number picked
#: on clothing-small/test before validation/ alone chose settings; docs/BENCHMARKS.md ("Choosing
#: on validation: the tail") compares that tail with two later recipes on validation/.
SOUP_SEEDS = 2
DEFAULT_TAIL_NAME = "fashion-tail-v1"


@dataclass(frozen=True)
class TailRecipe:
    """How the tail trains. ``views``: augmented crops per photo (cached); ``passes`` over them;
    ``seeds``: tails averaged into one; ``augment``: ``"crop"`` or ``"trivial"`` (crops, then
    TrivialAugmentWide); ``mixup``: when > 0, each batch is blended with a shuffled copy of
    itself by a weight drawn from Beta(mixup, mixup), labels alike; ``ema_decay``: when set, the
    weights and batch-norm statistics are an exponential moving average over the steps."""

    views: int = AUGMENTED_VIEWS
    passes: float = 1.0
    seeds: int = SOUP_SEEDS
    augment: str = "crop"
    mixup: float = 0.0
    ema_decay: float | None = None
    learning_rate: float = 1e-3
    batch_size: int = 32


def _mixed(
    batch: torch.Tensor, rng: np.random.Generator, mixup: float
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """The batch, its activation maps mirrored half the time and blended by mixup: ``(batch,
    share of the batch's own labels, partner rows)``."""
    import torch

    mirror = torch.from_numpy(rng.random(len(batch)) < 0.5)
    batch[mirror] = batch[mirror].flip(-1)
    share, partner = 1.0, torch.arange(len(batch))
    if mixup > 0:
        share = float(rng.beta(mixup, mixup))
        partner = torch.from_numpy(rng.permutation(len(batch)))
        batch = share * batch + (1.0 - share) * batch[partner]
    return batch, share, partner


def train_tail(
    activations: np.ndarray,
    targets: np.ndarray,
    classes: int,
    *,
    recipe: TailRecipe = TailRecipe(),
    seed: int = SEED,
    num_threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, np.ndarray]:
    """Trains the tail and a new linear classifier on cached trunk activations
    (views, N, 192, 7, 7) with labels ``targets`` (N,) in [0, classes), by ``recipe`` (its
    ``passes``, ``learning_rate``, ``batch_size``, ``mixup`` and ``ema_decay``). Returns the
    tail's state (see ``classifier.tail.tail_modules``) as float32 arrays; the classifier is
    discarded (heads are fitted on the tuned embeddings afterwards)."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from classifier.backbone import pretrained_network

    torch.manual_seed(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    tail = tail_modules(pretrained_network())
    classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, classes))
    views, count = activations.shape[:2]
    # (at least 8 steps: the one-cycle schedule needs a warm-up and a decay)
    steps = max(8, int(views * count * recipe.passes) // recipe.batch_size)
    optimiser = torch.optim.AdamW(
        [*tail.parameters(), *classifier.parameters()], lr=recipe.learning_rate, weight_decay=0.01
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.learning_rate, total_steps=steps, pct_start=0.25
    )
    rng = np.random.default_rng(seed)
    pairs = np.stack(np.meshgrid(np.arange(views), np.arange(count), indexing="ij"), axis=-1).reshape(-1, 2)
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(int(np.ceil(recipe.passes)) or 1)])
    labels = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    average = (
        AveragedModel(tail, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
        if recipe.ema_decay is not None
        else None
    )
    tail.train()
    classifier.train()
    began = time.perf_counter()
    for step in range(steps):
        chosen = pairs[order[step * recipe.batch_size : (step + 1) * recipe.batch_size]]
        batch = torch.from_numpy(activations[chosen[:, 0], chosen[:, 1]].astype(np.float32))
        batch, share, partner = _mixed(batch, rng, recipe.mixup)
        truth = labels[chosen[:, 1]]
        logits = classifier(tail_forward(tail, batch, drop_connect=0.2))
        loss = share * torch.nn.functional.cross_entropy(logits, truth, label_smoothing=0.1)
        if share < 1.0:
            loss = loss + (1.0 - share) * torch.nn.functional.cross_entropy(
                logits, truth[partner], label_smoothing=0.1
            )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if average is not None:
            average.update_parameters(tail)
        if step % 100 == 0:
            log(f"  step {step}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - began:.0f} s)")
    final = average.module if average is not None else tail
    return {key: value.detach().numpy().copy() for key, value in final.state_dict().items()}


@dataclass
class FinetuneReport:
    """What ``finetune`` produced: the tail and head artifacts, test figures, phase seconds."""

    tail: TailArtifact
    head_manifest: Path
    test: dict[str, Any]
    seconds: dict[str, float]


def tune_tail(
    root: Path,
    *,
    tail_name: str,
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    recipe: TailRecipe,
    log: Callable[[str], None],
) -> tuple[TailArtifact, Path, dict[str, float]]:
    """Tunes a tail on ``root/train`` by ``recipe`` (a soup of ``recipe.seeds`` tails) and writes
    it to ``out_dir``. Returns the artifact, its JSON path and the seconds its phases took."""
    from classifier.features import list_labelled_photos

    began = time.perf_counter()
    photos = list_labelled_photos(root / "train")
    classes = sorted({photo.label for photo in photos})
    targets = np.array([classes.index(photo.label) for photo in photos])
    activations = cached_activations(
        [p.path for p in photos], views=recipe.views, augment=recipe.augment, cache_dir=cache_dir, log=log
    )
    cached = time.perf_counter()
    log(f"trunk activations of {len(photos)} photos × {recipe.views} views in {cached - began:.0f} s")
    states = [
        train_tail(activations, targets, len(classes), recipe=recipe, seed=seed, log=log)
        for seed in range(recipe.seeds)
    ]
    state = {key: np.mean([s[key].astype(np.float64) for s in states], axis=0) for key in states[0]}
    tuned = time.perf_counter()
    log(f"tail trained in {tuned - cached:.0f} s")
    description = {
        "tail_start_block": TAIL_START,
        "views": recipe.views,
        "passes": recipe.passes,
        "soup_of_seeds": recipe.seeds,
        "crop_scale": list(CROP_SCALE),
        "augment": recipe.augment,
        "mixup": recipe.mixup,
        "ema_decay": recipe.ema_decay,
        "optimiser": "AdamW one-cycle, peak 1e-3, batch 32, weight decay 0.01",
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "classes": classes,
        "photos": len(photos),
        "data": f"{root.name}/train",
    }
    hashes = frozenset(hashlib.sha256(p.path.read_bytes()).hexdigest() for p in photos)
    tail = TailArtifact(name=tail_name, state=state, trained_on=hashes, recipe=description)
    path = tail.save(out_dir)
    return tail, path, {"activations": round(cached - began, 1), "tail": round(tuned - cached, 1)}


def fit_head_on_tail(
    tail: TailArtifact,
    tail_base: Path,
    root: Path,
    *,
    head_version: str,
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    precision: float,
    log: Callable[[str], None],
) -> tuple[Path, dict[str, Any]]:
    """Fits a head on the tuned backbone's int8 embeddings of ``root/train`` + ``validation``
    (validation/ alone calibrating: the tail never saw it), measures it on ``test/`` and writes
    it to ``out_dir``. Returns the head's JSON path and its figures on test/."""
    from classifier.backbone import OnnxBackbone, default_cache_dir, ensure_onnx, tail_caches_clear
    from classifier.calibration import evaluation_metrics
    from classifier.features import LabelledFeatures, extract_features
    from classifier.quantize import ensure_quantized
    from classifier.taxonomy import load_taxonomy
    from classifier.training.candidate import CandidateConfig, train_candidate
    from classifier.training.folder import SPLITS, TRAINING_VIEWS
    from classifier.training.outputs import LabelledOutputs, score_head

    tail_caches_clear()
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
    config = CandidateConfig(
        backbone_version=backbone.version, version=head_version, views=TRAINING_VIEWS, precision=precision
    )
    candidate = train_candidate(
        data, np.zeros(len(fit), bool), taxonomy=taxonomy, config=config, calibration=unbiased, log=log
    )
    head = candidate.head
    head.auto_accept = replace(
        head.auto_accept,
        calibration=f"out-of-fold predictions on {root.name}/validation ({int(unbiased.sum())} photos "
        "the tail never saw), int8 backbone",
    )
    test = features["test"]
    predicted, confidence = score_head(
        head, taxonomy, LabelledOutputs(test.embeddings, test.logits, test.labels, list(range(len(test))))
    )
    figures = evaluation_metrics(
        test.labels, predicted, confidence, classes=head.classes, thresholds=head.auto_accept.thresholds
    )
    head.metrics = {
        f"{root.name}/validation (out-of-fold, chose the settings)": candidate.metrics["cross_validated"],
        f"{root.name}/test": {
            key: figures[key] for key in ("n", "accuracy", "macro_f1", "ece", "auto_accept")
        },
        "held_out": figures,
    }
    head.hyperparameters["backbone_tail"] = tail.name
    return head.save(out_dir), figures


def finetune(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    tail_name: str = DEFAULT_TAIL_NAME,
    head_version: str = DEFAULT_HEAD_VERSION,
    out_dir: str | os.PathLike[str] = ARTIFACTS_DIR,
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: TailRecipe = TailRecipe(),
    precision: float = 0.97,
    head_only: bool = False,
    log: Callable[[str], None] = print,
) -> FinetuneReport:
    """The whole recipe on ``data_dir/{train,validation,test}`` (default: clothing-small in the
    datasets folder): tune the tail on ``train/`` (``tune_tail``), build the tuned backbone, fit
    a head on its int8 embeddings of ``train/`` + ``validation/`` (``fit_head_on_tail``: as
    workers serve it; validation/ alone picks C and sets the temperature, the gate and the
    auto-accept thresholds, out of fold; test/ only reports), and write both artifacts to
    ``out_dir``. ``head_only``: keep the tail already in ``out_dir`` and only fit the head again.
    Raises ``FileNotFoundError`` for a missing split folder."""
    from classifier.datasets import CLOTHING_SMALL, dataset_dir
    from classifier.training.folder import SPLITS

    root = Path(data_dir) if data_dir is not None else dataset_dir(CLOTHING_SMALL)
    for split in SPLITS:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"Training data not found: {root / split} is missing.")
    began = time.perf_counter()
    if head_only:
        tail = TailArtifact.load(tail_name, out_dir)
        tail_base, seconds = Path(out_dir) / tail_name, {"activations": 0.0, "tail": 0.0}
    else:
        tail, tail_path, seconds = tune_tail(
            root, tail_name=tail_name, out_dir=out_dir, cache_dir=cache_dir, recipe=recipe, log=log
        )
        tail_base = tail_path.with_suffix("")
    tuned = time.perf_counter()
    head_manifest, figures = fit_head_on_tail(
        tail,
        tail_base,
        root,
        head_version=head_version,
        out_dir=out_dir,
        cache_dir=cache_dir,
        precision=precision,
        log=log,
    )
    finished = time.perf_counter()
    seconds = {**seconds, "head": round(finished - tuned, 1), "total": round(finished - began, 1)}
    summary = {key: figures[key] for key in ("n", "accuracy", "macro_f1", "ece", "auto_accept")}
    log(f"{root.name}/test: {summary}; {seconds}")
    return FinetuneReport(tail=tail, head_manifest=head_manifest, test=figures, seconds=seconds)
