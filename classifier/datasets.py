"""Where the labelled photo datasets live: one setting for the CLIs, the benchmarks and the tests.

The datasets (``clothing-small/{train,validation,test}/<category-slug>/*.jpg``, ``marketplace-smoke``
...) are not shipped in the repository. They are looked up in ``$CLASSIFIER_DATASETS_DIR``, else in
``../shared/datasets`` beside the repository. Code that needs one calls `dataset_dir`; tests and
benchmarks skip or stop with a message when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

DATASETS_DIR_ENV = "CLASSIFIER_DATASETS_DIR"
DEFAULT_DATASETS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
#: The labelled clothing photos the shipped head was trained, calibrated and measured on.
CLOTHING_SMALL = "clothing-small"


def dataset_dir(name: str = "") -> Path:
    """The folder of dataset `name` (the datasets folder itself when `name` is empty).

    ``$CLASSIFIER_DATASETS_DIR/<name>`` when that variable is set and not empty, else
    ``../shared/datasets/<name>`` beside the repository. Existence is not checked: callers decide
    whether a missing dataset is a skip or an error.
    """
    root = os.environ.get(DATASETS_DIR_ENV) or DEFAULT_DATASETS_DIR
    return Path(root) / name if name else Path(root)
