"""Fixtures of the worker tests."""

from __future__ import annotations

import pytest

from catalog.models import ModelVersion
from catalog.services.suggestions import model_version_ensure
from workers import inference


@pytest.fixture
def version(verified_model_files: None) -> ModelVersion:
    """The version this process's classifier scores as (active, as the first one)."""
    classifier = inference.get_classifier()
    return model_version_ensure(name=classifier.model_version, backbone_version=classifier.backbone_version)
