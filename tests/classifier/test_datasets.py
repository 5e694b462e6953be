"""The datasets folder is one setting: $CLASSIFIER_DATASETS_DIR, else ../shared/datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.datasets import CLOTHING_SMALL, DATASETS_DIR_ENV, DEFAULT_DATASETS_DIR, dataset_dir
from tests.conftest import REPO_ROOT


def test_datasets_default_to_shared_beside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    # given no setting
    monkeypatch.delenv(DATASETS_DIR_ENV, raising=False)

    # then the datasets are looked up in ../shared/datasets
    assert REPO_ROOT.parent / "shared" / "datasets" == DEFAULT_DATASETS_DIR
    assert dataset_dir() == DEFAULT_DATASETS_DIR
    assert dataset_dir(CLOTHING_SMALL) == DEFAULT_DATASETS_DIR / "clothing-small"


def test_the_environment_variable_moves_every_dataset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given the setting points at another folder
    monkeypatch.setenv(DATASETS_DIR_ENV, str(tmp_path))

    # then every dataset is looked up there
    assert dataset_dir() == tmp_path
    assert dataset_dir(CLOTHING_SMALL) == tmp_path / "clothing-small"


def test_an_empty_setting_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the variable is set but empty (as `VAR= make test` leaves it)
    monkeypatch.setenv(DATASETS_DIR_ENV, "")

    # then the default applies rather than the current directory
    assert dataset_dir(CLOTHING_SMALL) == DEFAULT_DATASETS_DIR / "clothing-small"
