"""The whole Brainwave article, read from the seed at test time, with its listed substitutions.

``ARTICLE_PATH`` is the article as published (``how-to-deploy-fpga-web-service.md``); ``ported``
extracts its Python blocks in order and applies ``SUBSTITUTIONS``: the imports (Azure ML's paths
to their fpgaserve twins) and the few lines that need the internet or an Azure subscription, each
with its reason. Everything else runs verbatim.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ARTICLE_PATH", "SUBSTITUTIONS", "article_blocks", "ported"]

ARTICLE_PATH = Path(__file__).resolve().parents[3] / "shared" / "seed" / "how-to-deploy-fpga-web-service.md"

# old line (stripped of trailing blanks) -> (new line, why)
SUBSTITUTIONS: dict[str, tuple[str, str]] = {
    "import tensorflow as tf": ("from fpgaserve.sdk import tf1 as tf", "import"),
    "import azureml.contrib.brainwave.models.utils as utils": ("import fpgaserve.sdk.models.utils as utils", "import"),
    # Offline, the zoo's real ImageNet weights are EfficientNet-Lite0's (ResNet-50's are downloaded):
    # the same three calls with that model, so that the photo of a cat is scored as a cat.
    "image_tensors = utils.preprocess_array(in_images)": (
        'image_tensors = utils.preprocess_array(in_images, model="efficientnet-lite0")', "internet (weights)"),
    "from azureml.contrib.brainwave.models import QuantizedResnet50, Resnet50": (
        "from fpgaserve.sdk.models import QuantizedEfficientNetLite0", "import"),
    "model = QuantizedResnet50(model_path, is_frozen = True)": (
        "model = QuantizedEfficientNetLite0(model_path)", "internet (weights)"),
    "classifier_input, classifier_output = Resnet50.get_default_classifier(feature_tensor, model_path)": (
        "from fpgaserve.sdk.graph_mode import import_keras; classifier_input, classifier_output = "
        'feature_tensor, import_keras(lambda: model.classifier, feature_tensor, name="classifier")',
        "internet (weights)"),
    "from azureml.contrib.brainwave.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage": (
        "from fpgaserve.sdk.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage", "import"),
    "from azureml.core import Workspace": ("from fpgaserve.sdk.core import Workspace", "import"),
    # kmock cannot port-forward: the test runs the pod on this machine and says where (DirectAddress;
    # POD_PORT is the port the test publishes it on).
    "ws = Workspace.from_config()": (
        "from fpgaserve.sdk.cluster.connect import DirectAddress; "
        'ws = Workspace.from_config(connector=DirectAddress("127.0.0.1", POD_PORT))', "Azure subscription (cluster)"),
    "from azureml.core.model import Model": ("from fpgaserve.sdk.core.model import Model", "import"),
    "from azureml.core.webservice import Webservice": ("from fpgaserve.sdk.core.webservice import Webservice", "import"),
    "from azureml.exceptions import WebserviceException": (
        "from fpgaserve.sdk.exceptions import WebserviceException", "import"),
    "from azureml.contrib.brainwave import BrainwaveWebservice, BrainwaveImage": (
        "from fpgaserve.sdk import BrainwaveWebservice, BrainwaveImage", "import"),
    # The article's typo: `true` is a NameError in Python.
    "    service.wait_for_deployment(true)": ("    service.wait_for_deployment(True)", "typo"),
    "import requests": ("from fpgaserve.sdk import imagenet_labels", "import"),
    'classes_entries = requests.get("https://raw.githubusercontent.com/Lasagne/Recipes/master/examples/resnet50/'
    'imagenet_classes.txt").text.splitlines()': ("classes_entries = imagenet_labels()", "internet (labels)"),
}  # fmt: skip


def article_blocks(text: str) -> list[str]:
    """The ```python blocks of the article, in order."""
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S)]


def ported(text: str, *, pod_port: int = 8443) -> str:
    """The article's code with exactly the substitutions applied (each must match once);
    ``pod_port``: where the test publishes the pod's port on this machine."""
    lines = [line.rstrip() for block in article_blocks(text) for line in block.splitlines()]
    for old, (new, _) in SUBSTITUTIONS.items():
        assert lines.count(old) == 1, f"the article no longer has exactly one line {old!r}"
        lines[lines.index(old)] = new.replace("POD_PORT", str(pod_port))
    return "\n".join(lines) + "\n"
