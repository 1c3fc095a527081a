"""The article "Deploy a model as a web service on an FPGA" runs on fpgaserve with only its imports changed.

The article's code (pipeline definition through ``model_def.save``) is kept verbatim below; the test
applies the line changes of docs/sdk.md (imports, plus ``weights="random"`` where the article would
download ImageNet weights) and runs it in a fresh interpreter, because ``tf1`` disables TF2
behaviour process-wide, with HOME pointing at a scratch directory for its ``~/models``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from fpgaserve.api.manifest import FpgaStageSpec, HostImagePreprocessSpec, TensorflowStageSpec
from fpgaserve.npu.formats import DEFAULT_FORMAT
from fpgaserve.package import verify_package
from tests.runtime.tiny import encode

ARTICLE = """\
import os
import tensorflow as tf

# Input images as a two-dimensional tensor containing an arbitrary number of images represented a strings
import azureml.contrib.brainwave.models.utils as utils
in_images = tf.placeholder(tf.string)
image_tensors = utils.preprocess_array(in_images)
print(image_tensors.shape)

from azureml.contrib.brainwave.models import QuantizedResnet50, Resnet50
model_path = os.path.expanduser('~/models')
model = QuantizedResnet50(model_path, is_frozen = True)
feature_tensor = model.import_graph_def(image_tensors)
print(model.version)
print(feature_tensor.name)
print(feature_tensor.shape)

classifier_input, classifier_output = Resnet50.get_default_classifier(feature_tensor, model_path)

from azureml.contrib.brainwave.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage

save_path = os.path.expanduser('~/models/save')
model_def_path = os.path.join(save_path, 'service_def.zip')

model_def = ModelDefinition()
with tf.Session() as sess:
    model_def.pipeline.append(TensorflowStage(sess, in_images, image_tensors))
    model_def.pipeline.append(BrainWaveStage(sess, model))
    model_def.pipeline.append(TensorflowStage(sess, classifier_input, classifier_output))
    model_def.save(model_def_path)
    print(model_def_path)
"""

# The whole port, line for line (docs/sdk.md has the same table).
CHANGES = {
    "import tensorflow as tf": "from fpgaserve.sdk import tf1 as tf",
    "import azureml.contrib.brainwave.models.utils as utils": "import fpgaserve.sdk.models.utils as utils",
    "from azureml.contrib.brainwave.models import QuantizedResnet50, Resnet50": (
        "from fpgaserve.sdk.models import QuantizedResnet50, Resnet50"
    ),
    "from azureml.contrib.brainwave.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage": (
        "from fpgaserve.sdk.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage"
    ),
    # Offline: seeded random weights where the article downloads Keras's ImageNet weights.
    "model = QuantizedResnet50(model_path, is_frozen = True)": (
        'model = QuantizedResnet50(model_path, is_frozen = True, weights="random")'
    ),
    "classifier_input, classifier_output = Resnet50.get_default_classifier(feature_tensor, model_path)": (
        "classifier_input, classifier_output = Resnet50.get_default_classifier("
        'feature_tensor, model_path, weights="random")'
    ),
}


def ported() -> str:
    lines = ARTICLE.splitlines()
    for old, new in CHANGES.items():
        assert lines.count(old) == 1, old
        lines[lines.index(old)] = new
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def article_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    home = tmp_path_factory.mktemp("home")
    script = home / "article.py"
    script.write_text(ported())
    env = {**os.environ, "HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600, cwd=home
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return home / "models" / "save" / "service_def.zip", done.stdout.splitlines()


def test_only_imports_and_downloads_change() -> None:
    changed = [(a, b) for a, b in zip(ARTICLE.splitlines(), ported().splitlines(), strict=True) if a != b]
    assert len(changed) == len(CHANGES)
    assert all("import" in a or "weights=" in b for a, b in changed)  # imports, and the offline weights


def test_article_code_saves_a_package(article_run: tuple[Path, list[str]]) -> None:
    package, stdout = article_run
    assert stdout[0] == "(?, 224, 224, 3)"
    assert stdout[1] == f"resnet50-1.0-random-0-{DEFAULT_FORMAT.name}"
    assert stdout[2:4] == ["resnet50/Identity:0", "(?, 2048)"]
    assert stdout[-1] == str(package)
    manifest = verify_package(package)
    assert [s.kind for s in manifest.pipeline] == ["tensorflow", "fpga", "tensorflow"]
    # The article's preprocessing and default classifier are fpgaserve's: also written TensorFlow-free.
    assert [getattr(s, "runtime", None) for s in manifest.pipeline] == ["host", None, "host"]
    preprocess = manifest.pipeline[0]
    assert isinstance(preprocess, TensorflowStageSpec) and isinstance(
        preprocess.host, HostImagePreprocessSpec
    )
    assert preprocess.host.channel_order == "bgr" and preprocess.host.mean == (103.939, 116.779, 123.68)
    assert manifest.input.dtype == "string" and manifest.output.shape == (1000,)
    fpga = manifest.pipeline[1]
    assert (
        isinstance(fpga, FpgaStageSpec) and fpga.input.shape == (224, 224, 3) and fpga.output.shape == (2048,)
    )


@pytest.mark.slow
def test_article_package_serves(article_run: tuple[Path, list[str]]) -> None:
    from fpgaserve.runtime.host_stages import PROBABILITY_TOLERANCE
    from fpgaserve.runtime.pipeline import load_pipeline

    photos = [encode(skimage.data.chelsea(), "jpeg"), encode(skimage.data.coffee(), "png")]
    with load_pipeline(article_run[0], env={}) as runtime:
        result = runtime.predict(photos)
    with load_pipeline(article_run[0], env={}, warmup=False, host_stages=False) as tf_path:
        expected = tf_path.predict(photos).outputs
    assert result.outputs.shape == (2, 1000)
    np.testing.assert_allclose(result.outputs.sum(axis=1), 1.0, rtol=1e-4)
    assert result.device_seconds > 0
    assert np.abs(result.outputs - expected).max() <= PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(result.outputs.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.slow
def test_article_package_serves_without_tensorflow(article_run: tuple[Path, list[str]]) -> None:
    from tests.runtime.test_host_serving import NO_TENSORFLOW

    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, str(article_run[0])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False False"
