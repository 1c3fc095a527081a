"""Shared fixtures. Importing fpgaserve.npu first applies its threading defaults before numpy loads."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fpgaserve.npu  # noqa: F401
