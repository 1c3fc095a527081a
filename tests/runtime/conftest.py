"""Packages built once per session: the tiny pipeline, and EfficientNet-Lite0 with its real weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.runtime.tiny import tiny_classifier, tiny_definition, tiny_featurizer


@pytest.fixture(scope="session")
def tiny_models() -> tuple[Any, Any]:
    return tiny_featurizer(), tiny_classifier()


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Any, Any]) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "service_def.zip"
    tiny_definition(*tiny_models).save(path)
    return path


@pytest.fixture(scope="session")
def lite0_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fpgaserve.sdk import QuantizedEfficientNetLite0, zoo_pipeline

    model = QuantizedEfficientNetLite0(tmp_path_factory.mktemp("models"))
    path = tmp_path_factory.mktemp("lite0") / "service_def.zip"
    zoo_pipeline(model).save(path)
    return path
