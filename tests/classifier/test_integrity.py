"""The model cache cannot lie: a cached ONNX file is trusted only when its bytes match the
SHA-256 of its manifest and it answers the smoke photo as recorded when it was built; a file
that fails is built again, and a build that disagrees with its reference never enters the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from classifier import integrity
from classifier.backbone import OnnxBackbone, ensure_onnx
from dev.chaos.cache import rewrite_checksum, scramble_weights


@pytest.fixture
def cache(tmp_path: Path, onnx_path: Path) -> Path:
    """A private copy of the session's verified fp32 export and its manifest."""
    for source in (onnx_path, integrity.manifest_path(onnx_path)):
        shutil.copy2(source, tmp_path / source.name)
    return tmp_path / onnx_path.name


def test_a_verified_file_loads_and_answers_its_recorded_smoke(cache: Path) -> None:
    backbone = OnnxBackbone.verified(cache, num_threads=1)
    manifest = integrity.Manifest.read(cache)
    smoke = integrity.smoke_run(backbone.run)
    assert smoke.top1 == manifest.smoke.top1
    assert smoke.mismatch(manifest.smoke, min_cosine=0.9999) is None


def test_a_truncated_file_is_refused_at_load_and_rebuilt_by_ensure(cache: Path) -> None:
    # given a cached export cut in half (a full disk, a killed copy)
    size = cache.stat().st_size
    cache.write_bytes(cache.read_bytes()[: size // 2])

    # when a worker process loads it, then it is refused before onnxruntime sees it
    with pytest.raises(integrity.ModelCacheError, match="truncated"):
        OnnxBackbone.verified(cache, num_threads=1)
    # and without permission to rebuild, ensure refuses too
    with pytest.raises(integrity.ModelCacheError, match="truncated"):
        ensure_onnx(cache.parent, rebuild=False)

    # when the cache is ensured, then the file is exported again and verifies
    assert ensure_onnx(cache.parent) == cache
    assert cache.stat().st_size == size
    OnnxBackbone.verified(cache, num_threads=1)


def test_scrambled_weights_are_caught_by_the_smoke_inference_even_with_a_matching_checksum(
    cache: Path,
) -> None:
    # given a cached export whose weights were scrambled, and whose checksum was rewritten to match
    scramble_weights(cache)
    rewrite_checksum(cache)

    # when it is loaded, then the smoke inference gives it away
    with pytest.raises(integrity.ModelCacheError, match="smoke"):
        OnnxBackbone.verified(cache, num_threads=1)


def _runner(data: bytes) -> integrity.Runner:
    return OnnxBackbone(Path("cached.onnx"), num_threads=1, model_bytes=data).run


def test_ensure_rebuilds_a_scrambled_file_from_its_recipe(cache: Path, onnx_path: Path) -> None:
    # given a scrambled file with a rewritten checksum, and a recipe that writes the good bytes
    good = onnx_path.read_bytes()
    reference = integrity.Manifest.read(onnx_path).smoke
    scramble_weights(cache)
    rewrite_checksum(cache)

    # when the cache is ensured
    integrity.ensure(
        cache,
        build=lambda path: path.write_bytes(good),
        reference=lambda: reference,
        runner=_runner,
        min_cosine=0.999,
    )

    # then the file is the good one again, with a manifest that verifies
    assert cache.read_bytes() == good
    OnnxBackbone.verified(cache, num_threads=1)


def test_a_build_that_disagrees_with_its_reference_never_enters_the_cache(cache: Path) -> None:
    # given no cached file, and a recipe that produces scrambled weights
    scrambled = cache.with_name("scrambled.onnx")
    shutil.copy2(cache, scrambled)
    scramble_weights(scrambled)
    reference = integrity.Manifest.read(cache).smoke
    target = cache.with_name("new.onnx")

    # when the cache is ensured, then the build is refused and nothing is left in place
    with pytest.raises(integrity.ModelCacheError, match="disagrees with its reference"):
        integrity.ensure(
            target,
            build=lambda path: path.write_bytes(scrambled.read_bytes()),
            reference=lambda: reference,
            runner=_runner,
            min_cosine=0.999,
        )
    assert not target.exists()
    assert not integrity.manifest_path(target).exists()
    assert not list(cache.parent.glob(".new.onnx.*.tmp"))


def test_a_cache_that_cannot_be_written_makes_ensure_fail_loudly(cache: Path, onnx_path: Path) -> None:
    # given a truncated file whose manifest cannot be replaced (a directory stands in its way)
    cache.write_bytes(cache.read_bytes()[:1000])
    manifest = integrity.manifest_path(cache)
    manifest.unlink()
    manifest.mkdir()
    reference = integrity.Manifest.read(onnx_path).smoke

    # when the cache is ensured, then the error says so instead of anything being served
    with pytest.raises(integrity.ModelCacheError, match="could not be rebuilt .*: Is a directory"):
        integrity.ensure(
            cache,
            build=lambda path: path.write_bytes(onnx_path.read_bytes()),
            reference=lambda: reference,
            runner=_runner,
            min_cosine=0.999,
        )
    with pytest.raises(integrity.ModelCacheError):
        OnnxBackbone.verified(cache, num_threads=1)


def test_a_file_from_before_manifests_is_adopted_after_a_smoke_check(cache: Path, onnx_path: Path) -> None:
    # given a good cached export without a manifest (a cache written by an older version)
    integrity.manifest_path(cache).unlink()
    modified = cache.stat().st_mtime_ns

    # when the cache is ensured with the export's reference
    reference = integrity.Manifest.read(onnx_path).smoke
    integrity.ensure(
        cache,
        build=lambda path: pytest.fail("a good file must not be rebuilt"),
        reference=lambda: reference,
        runner=_runner,
        min_cosine=0.999,
    )

    # then it is kept as it is, with a manifest recording its checksum
    assert cache.stat().st_mtime_ns == modified
    OnnxBackbone.verified(cache, num_threads=1)
