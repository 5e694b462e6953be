"""Model files in the cache that cannot lie.

Every ONNX file the cache holds (the fp32 export, the int8 backbone) has a manifest beside it,
``<file>.manifest.json``, written when the file is built::

    {"file": "efficientnet-lite0-….onnx", "sha256": "…", "bytes": 28374718,
     "smoke": {"photo_sha256": "…", "top1": 842, "embedding": [… 1280 floats …]}}

``smoke`` is what the file answers for a fixed photo shipped with the package
(``classifier/data/smoke.jpg``, a CC0 photo of the demo set): its ImageNet top-1 and its
L2-normalised embedding. Before it is recorded, that answer is checked against a reference the
file must agree with (the torch network for the export, the verified export for the int8
model), so a bad build never enters the cache.

A file is trusted only when its bytes hash to the manifest's SHA-256 (a truncated or edited
file fails) and a fresh smoke inference gives the recorded top-1 with an embedding within
``LOAD_MIN_COSINE`` of the recorded one (scrambled weights fail even when someone also
rewrote the checksum). ``ensure`` rebuilds a file that fails; ``load_verified`` and
``check_smoke`` only check, for processes that must not build (a worker's pool processes).

Files are written to a temporary name in the same directory and renamed into place, under an
exclusive lock per file; readers take the lock shared, so they never see a file and a manifest
of different builds. A file found without a manifest (a cache from before manifests) is adopted
when its smoke inference agrees with the reference, and rebuilt otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from classifier.atomic import atomic_path, write_atomically

logger = logging.getLogger(__name__)

SMOKE_PHOTO = Path(__file__).resolve().parent / "data" / "smoke.jpg"
MANIFEST_SUFFIX = ".manifest.json"
#: At load, the smoke embedding must be at least this close (cosine) to the recorded one. The
#: same file on another CPU or on a GPU stays above 0.999; scrambled weights fall far below.
LOAD_MIN_COSINE = 0.99

#: Runs the network: float32 (N, 3, 224, 224) → (embeddings (N, D), ImageNet logits (N, 1000)).
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ModelCacheError(RuntimeError):
    """A cached model file that cannot be trusted or built; ``str(error)`` names the file and the
    check it failed."""


@dataclass(frozen=True)
class Smoke:
    """A network's answer for the smoke photo: ImageNet top-1 index and L2-normalised embedding."""

    top1: int
    embedding: np.ndarray

    def mismatch(self, expected: Smoke, *, min_cosine: float) -> str | None:
        """Why this answer differs from ``expected``, or None when it agrees."""
        if not np.isfinite(self.embedding).all():
            return "the smoke inference gave non-finite outputs"
        if self.top1 != expected.top1:
            return f"smoke top-1 is ImageNet class {self.top1}, expected {expected.top1}"
        cosine = float(self.embedding @ expected.embedding)
        if cosine < min_cosine:
            return f"smoke embedding cosine {cosine:.4f} is below {min_cosine}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "photo_sha256": smoke_photo_sha256(),
            "top1": self.top1,
            "embedding": [round(float(value), 6) for value in self.embedding],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Smoke:
        if data.get("photo_sha256") != smoke_photo_sha256():
            raise ModelCacheError("the manifest's smoke result is for another smoke photo")
        return cls(top1=int(data["top1"]), embedding=np.asarray(data["embedding"], dtype=np.float32))


@lru_cache(maxsize=1)
def smoke_photo_sha256() -> str:
    return hashlib.sha256(SMOKE_PHOTO.read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def _smoke_batch() -> np.ndarray:
    from classifier.preprocess import load_image, to_batch

    return to_batch([load_image(SMOKE_PHOTO)])


def smoke_run(run: Runner) -> Smoke:
    """Run the network on the smoke photo (centre crop, float32 (1, 3, 224, 224))."""
    embeddings, logits = run(_smoke_batch())
    embedding = np.asarray(embeddings[0], dtype=np.float32)
    norm = float(np.linalg.norm(embedding))
    return Smoke(top1=int(np.argmax(logits[0])), embedding=embedding / norm if norm > 0 else embedding)


@dataclass(frozen=True)
class Manifest:
    """What a cached file was when it was built: its name, SHA-256, size and smoke answer."""

    file: str
    sha256: str
    size: int
    smoke: Smoke

    @classmethod
    def read(cls, model_path: Path) -> Manifest:
        """The manifest of ``model_path``. Raises ``ModelCacheError`` when it is missing or unreadable."""
        path = manifest_path(model_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                file=str(data["file"]),
                sha256=str(data["sha256"]),
                size=int(data["bytes"]),
                smoke=Smoke.from_dict(data["smoke"]),
            )
        except FileNotFoundError:
            raise ModelCacheError(f"{model_path.name} has no manifest") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelCacheError(f"the manifest of {model_path.name} is unreadable ({error})") from error

    def to_json(self) -> str:
        data = {"file": self.file, "sha256": self.sha256, "bytes": self.size, "smoke": self.smoke.to_dict()}
        return json.dumps(data, indent=1) + "\n"


def manifest_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + MANIFEST_SUFFIX)


def _check_bytes(model_path: Path, data: bytes, manifest: Manifest) -> None:
    if len(data) != manifest.size:
        raise ModelCacheError(
            f"{model_path.name} has {len(data)} bytes, its manifest {manifest.size} (truncated or replaced)"
        )
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ModelCacheError(f"{model_path.name} does not match the SHA-256 of its manifest")


@contextlib.contextmanager
def _locked(model_path: Path, mode: int) -> Iterator[None]:
    lock = model_path.with_name(f".{model_path.name}.lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115 (closed below, after the body ran)
    except OSError:  # a read-only cache (baked into an image): nothing can rewrite it anyway
        yield
        return
    with handle:
        fcntl.flock(handle, mode)
        yield


def load_verified(model_path: Path) -> tuple[bytes, Manifest]:
    """The file's bytes, checked against its manifest (size, SHA-256), and the manifest: hand
    these very bytes to onnxruntime, then ``check_smoke``. Raises ``ModelCacheError``."""
    model_path = Path(model_path)
    with _locked(model_path, fcntl.LOCK_SH):
        return _read_verified(model_path)


def _read_verified(model_path: Path) -> tuple[bytes, Manifest]:
    try:
        manifest = Manifest.read(model_path)
        data = model_path.read_bytes()
    except FileNotFoundError:
        raise ModelCacheError(f"{model_path.name} is not in the model cache") from None
    _check_bytes(model_path, data, manifest)
    return data, manifest


def check_smoke(run: Runner, manifest: Manifest, *, min_cosine: float = LOAD_MIN_COSINE) -> None:
    """Raise ``ModelCacheError`` unless ``run`` answers the smoke photo as recorded in ``manifest``."""
    problem = smoke_run(run).mismatch(manifest.smoke, min_cosine=min_cosine)
    if problem is not None:
        raise ModelCacheError(f"{manifest.file}: {problem}")


def ensure(
    model_path: Path,
    *,
    build: Callable[[Path], object],
    reference: Callable[[], Smoke],
    runner: Callable[[bytes], Runner],
    min_cosine: float,
    rebuild: bool = True,
) -> Path:
    """Return ``model_path`` once it is verified, building or rebuilding it when needed.

    ``build(path)`` writes the file to ``path``; ``reference()`` is the smoke answer a good file
    must agree with (within ``min_cosine``); ``runner(bytes)`` loads a file's bytes into a
    network. With ``rebuild=False`` a file that fails a check raises ``ModelCacheError`` instead.
    Raises ``ModelCacheError`` when a new build disagrees with its reference or cannot be
    written, and whatever else ``build`` raises.
    """
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(model_path, fcntl.LOCK_EX):
        try:
            data, manifest = _read_verified(model_path)
            check_smoke(runner(data), manifest)
            return model_path
        except ModelCacheError as error:
            problem = str(error)
        except Exception as error:  # onnxruntime refusing the bytes, say
            problem = f"{model_path.name} does not load ({type(error).__name__}: {error})"
        if model_path.is_file() and not manifest_path(model_path).exists():
            adopted = _adopt(model_path, reference, runner, min_cosine)
            if adopted is None:
                return model_path
            problem = adopted
        if not rebuild:
            raise ModelCacheError(problem)
        if model_path.exists():
            logger.warning("rebuilding %s: %s", model_path.name, problem)
        try:
            _build(model_path, build, reference, runner, min_cosine)
        except OSError as error:  # a full, read-only or broken cache directory
            raise ModelCacheError(
                f"{model_path.name} could not be rebuilt in {model_path.parent}: {error.strerror or error}"
            ) from error
    return model_path


def _adopt(
    model_path: Path, reference: Callable[[], Smoke], runner: Callable[[bytes], Runner], min_cosine: float
) -> str | None:
    """Record a manifest for a file built before manifests existed, if it agrees with its
    reference; returns why it does not otherwise."""
    data = model_path.read_bytes()
    try:
        smoke = smoke_run(runner(data))
    except Exception as error:
        return f"{model_path.name} does not load ({type(error).__name__})"
    problem = smoke.mismatch(reference(), min_cosine=min_cosine)
    if problem is not None:
        return f"{model_path.name}: {problem}"
    _write_manifest(model_path, Manifest(model_path.name, hashlib.sha256(data).hexdigest(), len(data), smoke))
    logger.info("%s verified against its reference and recorded", model_path.name)
    return None


def _build(
    model_path: Path,
    build: Callable[[Path], object],
    reference: Callable[[], Smoke],
    runner: Callable[[bytes], Runner],
    min_cosine: float,
) -> None:
    with atomic_path(model_path, fsync=True) as temporary:
        build(temporary)
        data = temporary.read_bytes()
        try:
            smoke = smoke_run(runner(data))
        except Exception as error:
            raise ModelCacheError(f"a new build of {model_path.name} does not load ({error})") from error
        problem = smoke.mismatch(reference(), min_cosine=min_cosine)
        if problem is not None:
            raise ModelCacheError(f"a new build of {model_path.name} disagrees with its reference: {problem}")
        manifest = Manifest(model_path.name, hashlib.sha256(data).hexdigest(), len(data), smoke)
    # The file first, then its manifest: a reader holding the shared lock sees neither move.
    _write_manifest(model_path, manifest)


def _write_manifest(model_path: Path, manifest: Manifest) -> None:
    write_atomically(manifest_path(model_path), manifest.to_json(), fsync=True)
