"""Helpers shared by the compiler tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def randomize_batchnorm(model: Any, *, seed: int = 0) -> None:
    """Give every BatchNormalization non-trivial statistics so that folding is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.gamma.shape[0]
            stats = [
                rng.uniform(0.5, 1.5, c),
                rng.normal(0, 0.1, c),
                rng.normal(0, 0.1, c),
                rng.uniform(0.5, 1.5, c),
            ]
            layer.set_weights(stats)
