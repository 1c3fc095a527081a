"""Fixtures shared by the compiler tests: Keras, and the small model with every layer kind the
compiler takes (built once per test module, as each module's tests may compile it in their own way)."""

from __future__ import annotations

from typing import Any

import pytest

from fpgaserve.compiler.fuse import optimize
from fpgaserve.compiler.keras_import import Graph, import_keras
from tests.compiler.test_compile import every_layer_model


@pytest.fixture(scope="session")
def keras() -> Any:
    import keras

    return keras


@pytest.fixture(scope="module")
def model(keras: Any) -> Any:
    return every_layer_model(keras)


@pytest.fixture(scope="module")
def graph(model: Any) -> Graph:
    return optimize(import_keras(model))
