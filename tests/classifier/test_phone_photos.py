"""The "phone photo" robustness set: deterministic, labelled like its source, within the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from classifier.__main__ import main
from classifier.phone_photos import (
    BLUR_RADIUS,
    BRIGHTNESS,
    JPEG_QUALITY,
    LONG_SIDE,
    MAX_ROTATION_DEGREES,
    build_phone_photos,
    draw_parameters,
)
from tests.classifier.conftest import FIXTURE_PHOTOS


def test_the_set_is_rebuilt_byte_for_byte_from_the_same_seed(tmp_path: Path) -> None:
    # given the fixture photos, built twice with the same seed and once with another
    first = build_phone_photos(FIXTURE_PHOTOS, tmp_path / "a", seed=7)
    second = build_phone_photos(FIXTURE_PHOTOS, tmp_path / "b", seed=7)
    other = build_phone_photos(FIXTURE_PHOTOS, tmp_path / "c", seed=8)

    # then the two builds are identical, file for file, and another seed differs
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    sources = sorted(p.relative_to(FIXTURE_PHOTOS) for p in FIXTURE_PHOTOS.rglob("*.jpg"))
    assert files == sources
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    assert first.read_text() == second.read_text()
    assert json.loads(first.read_text())["photos"] != json.loads(other.read_text())["photos"]


def test_every_photo_is_degraded_within_the_recipe(tmp_path: Path) -> None:
    # given the set built from the fixture photos
    manifest = json.loads(build_phone_photos(FIXTURE_PHOTOS, tmp_path).read_text())

    # then each photo is a JPEG of at most 320 px, with parameters in the stated ranges
    assert manifest["photos"] and not manifest["skipped"]
    for relative, parameters in manifest["photos"].items():
        with Image.open(tmp_path / relative) as image:
            assert image.format == "JPEG" and max(image.size) <= LONG_SIDE
        assert abs(parameters["rotation"]) <= MAX_ROTATION_DEGREES
        assert BRIGHTNESS[0] <= parameters["brightness"] <= BRIGHTNESS[1]
        assert BLUR_RADIUS[0] <= parameters["blur_radius"] <= BLUR_RADIUS[1]
        assert JPEG_QUALITY[0] <= parameters["quality"] <= JPEG_QUALITY[1]
    # and a photo's parameters depend on its own path only
    assert draw_parameters(7, "shoes/x.jpg") == draw_parameters(7, "shoes/x.jpg")
    assert draw_parameters(7, "shoes/x.jpg") != draw_parameters(7, "shoes/y.jpg")


def test_the_command_line_builds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phone-photos", str(FIXTURE_PHOTOS), str(tmp_path / "out")]) == 0
    assert "wrote 8 phone photos" in capsys.readouterr().out
    assert main(["phone-photos", str(tmp_path / "absent"), str(tmp_path / "out2")]) == 2
