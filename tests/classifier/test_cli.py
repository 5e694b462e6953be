"""``python -m classifier``: evaluate on a folder, and clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from classifier.__main__ import main
from classifier.head import DEFAULT_HEAD_VERSION
from tests.classifier.conftest import FIXTURE_PHOTOS


def test_evaluate_writes_the_report_as_json(
    tmp_path: Path, classifier_cache_dir: Path, onnx_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the fixture photos, one folder per category
    report_path = tmp_path / "report.json"
    # when evaluated from the command line
    status = main(
        [
            "--cache-dir",
            str(classifier_cache_dir),
            "evaluate",
            str(FIXTURE_PHOTOS),
            "--json",
            str(report_path),
            "--precision",
            "fp32",
        ]
    )
    # then it succeeds, prints the figures and writes them as JSON
    assert status == 0
    printed = capsys.readouterr().out
    assert re.search(r"top-1 accuracy: [01]\.\d{4} \(8 photos, 0 rejected\)", printed)
    assert "confusion (rows: folder, columns: predicted)" in printed
    report = json.loads(report_path.read_text())
    assert {"accuracy", "n", "per_category", "model_version", "images_per_second", "confusion"} <= set(report)
    # and the calibration and auto-accept figures, with the head's own thresholds and rule
    assert 0.0 <= report["ece"] <= 1.0 and report["top3"] >= report["accuracy"]
    auto = report["auto_accept"]
    assert set(auto) == {"precision", "coverage", "accepted", "correct"}
    assert auto["correct"] <= auto["accepted"] <= report["n"]
    assert auto["coverage"] == round(auto["accepted"] / report["n"], 4)
    assert report["precision"] == "fp32"
    # (one fixture photo per category: the floors on real datasets are in test_floors.py)
    assert report["n"] == 8 and report["accuracy"] >= 7 / 8
    assert report["per_category"]["shoes"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert report["model_version"].endswith(f"+{DEFAULT_HEAD_VERSION}")
    assert report["images_per_second"] > 0


def test_evaluate_counts_a_descendant_as_correct(
    tmp_path: Path, classifier_cache_dir: Path, onnx_path: Path
) -> None:
    # given a shoe photo filed under the top-level "fashion" folder, and an undecodable file
    folder = tmp_path / "fashion"
    folder.mkdir()
    (folder / "shoe.jpg").write_bytes(next((FIXTURE_PHOTOS / "shoes").glob("*.jpg")).read_bytes())
    (folder / "broken.jpg").write_bytes(b"<html></html>")
    report_path = tmp_path / "report.json"
    main(
        [
            "--cache-dir",
            str(classifier_cache_dir),
            "evaluate",
            str(tmp_path),
            "--json",
            str(report_path),
            "--precision",
            "fp32",
        ]
    )
    report = json.loads(report_path.read_text())
    # then "shoes" counts for "fashion", and the broken file is reported, not counted
    assert (report["accuracy"], report["n"]) == (1.0, 1)
    assert [Path(r["path"]).name for r in report["rejected"]] == ["broken.jpg"]


def test_evaluate_missing_folder_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "absent")]) == 2
    assert "error: Photo folder not found" in capsys.readouterr().err


def test_train_without_data_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given a data folder without train/validation/test
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    # then nothing is written and the message names the missing folder
    assert "error: Training data not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_evaluate_measures_the_precision_workers_serve_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.__main__ import build_parser

    # given no setting, then int8 (the workers' default); given CLASSIFIER_PRECISION, that one
    monkeypatch.delenv("CLASSIFIER_PRECISION", raising=False)
    assert build_parser().parse_args(["evaluate", "photos"]).precision == "int8"
    monkeypatch.setenv("CLASSIFIER_PRECISION", "fp32")
    assert build_parser().parse_args(["evaluate", "photos"]).precision == "fp32"
