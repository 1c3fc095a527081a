from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def keras() -> Any:
    import keras

    return keras
