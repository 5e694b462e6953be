"""The hashed lock files agree with the requirements*.in files they are compiled from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

LOCKS = {
    "requirements.txt": "requirements.in",
    "requirements-gpu.txt": "requirements-gpu.in",
    "requirements-dev.txt": "requirements-dev.in",
}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)")


def _direct_requirements(path: Path) -> list[Requirement]:
    """Requirements of a .in file, following `-r` includes (not `-c` constraints)."""
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-c "):
            continue
        if line.startswith("-r "):
            found += _direct_requirements(path.parent / line[3:].strip())
        else:
            found.append(Requirement(line))
    return found


def _pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock file; fails when a pin has no hash."""
    text = path.read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{path.name}: {match.group(1)} has no hash"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize("lock_name", sorted(LOCKS))
def test_every_direct_requirement_is_pinned_with_hashes_within_its_range(lock_name: str) -> None:
    lock = REPO_ROOT / lock_name
    pins = _pins(lock)
    for requirement in _direct_requirements(REPO_ROOT / LOCKS[lock_name]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock_name} lacks {requirement.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock_name} pins {name}=={pins[name]}, outside {requirement.specifier}: run `make lock`"
        )


def test_locks_agree_where_they_overlap() -> None:
    runtime = _pins(REPO_ROOT / "requirements.txt")
    for other in ("requirements-dev.txt", "requirements-gpu.txt"):
        pins = _pins(REPO_ROOT / other)
        differing = {name for name in runtime.keys() & pins.keys() if runtime[name] != pins[name]}
        assert not differing, f"{other} differs from requirements.txt on {sorted(differing)}"


def test_gpu_workers_get_the_cuda_build_of_onnxruntime_only() -> None:
    pins = _pins(REPO_ROOT / "requirements-gpu.txt")
    assert "onnxruntime-gpu" in pins
    assert "onnxruntime" not in pins
