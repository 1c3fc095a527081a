"""``ModelDefinition``: a pipeline of stages that saves as a service package.

Role: the notebook's ``azureml.contrib.brainwave.pipeline`` (``from fpgaserve.sdk.pipeline import
ModelDefinition, TensorflowStage, BrainWaveStage``). Stages run in order on the server, each one's
output the next one's input; ``save`` writes ``service_def.zip`` (docs/package.md).
``zoo_pipeline`` builds the usual image pipeline (preprocess -> FPGA featurizer -> classifier) for a
zoo model in one call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fpgaserve.sdk.graph_mode import eager
from fpgaserve.sdk.package_writer import PackageInfo, write_package
from fpgaserve.sdk.stages import BrainWaveStage, FpgaStage, KerasStage, Stage, TensorflowStage

if TYPE_CHECKING:
    from fpgaserve.sdk.zoo import QuantizedModel

__all__ = [
    "BrainWaveStage",
    "FpgaStage",
    "KerasStage",
    "ModelDefinition",
    "PackageInfo",
    "Stage",
    "TensorflowStage",
    "zoo_pipeline",
]


class ModelDefinition:
    """A named pipeline (``.pipeline``, a list of stages run in order) with optional class labels."""

    def __init__(
        self, name: str = "model", *, version: str = "1", labels: Sequence[str] | None = None
    ) -> None:
        self.name = name
        self.version = version
        self.labels: list[str] | None = list(labels) if labels is not None else None
        self.pipeline: list[Stage] = []

    def save(self, path: str | os.PathLike[str], *, host_lowering: bool = True) -> PackageInfo:
        """Write the package (``service_def.zip``) to ``path``; returns its digest and manifest.

        Works in TF2 and inside a ``tf.compat.v1`` session alike. Raises ValueError naming the stages
        whose output and input do not chain. The stages fpgaserve built (its preprocessing, the zoo's
        classifiers) are also written in a TensorFlow-free form the server runs without importing
        TensorFlow; ``host_lowering=False`` leaves it out (a package for servers older than it).
        """
        with eager():
            return write_package(
                self.pipeline, path=path, name=self.name, version=self.version, labels=self.labels,
                host_lowering=host_lowering,
            )  # fmt: skip

    def __repr__(self) -> str:
        stages = ", ".join(type(s).__name__ for s in self.pipeline)
        return f"ModelDefinition(name={self.name!r}, pipeline=[{stages}])"


def zoo_pipeline(model: QuantizedModel, *, name: str | None = None, labels: bool = True) -> ModelDefinition:
    """preprocess_array -> ``model`` on the FPGA -> its default classifier, with ImageNet labels.

    The first stage takes encoded images (a batch of JPEG/PNG strings).
    """
    import tensorflow as tf

    from fpgaserve.sdk.labels import imagenet_labels
    from fpgaserve.sdk.preprocessing import preprocess_array

    def preprocess(images: Any) -> Any:
        return preprocess_array(images, model=model)

    definition = ModelDefinition(name or model.name, version=model.version)
    if labels:
        definition.labels = imagenet_labels()
    definition.pipeline += [
        TensorflowStage(
            preprocess,
            input_signature=tf.TensorSpec([None], tf.string, name="images"),
            output_name="images",
            name="preprocess",
        ),
        FpgaStage(model, name="featurizer"),
        KerasStage(model.classifier, name="classifier"),
    ]
    return definition
