"""The SDK's pipeline: stages, preprocess_array, ModelDefinition.save and the package it writes."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data

from fpgaserve.api.manifest import FpgaStageSpec, TensorSpecModel
from fpgaserve.npu.formats import DEFAULT_FORMAT
from fpgaserve.package import load_service_definition, verify_package
from fpgaserve.sdk import (
    BrainWaveStage,
    FpgaStage,
    KerasStage,
    ModelDefinition,
    QuantizedEfficientNetLite0,
    QuantizedResnet50,
    TensorflowStage,
    preprocess_array,
)
from tests.runtime.tiny import LABELS, SIZE, encode, tiny_classifier, tiny_definition, tiny_featurizer


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    return tiny_featurizer(), tiny_classifier()


# Tolerances: TF's and numpy's bicubic weights round differently in float32 (about 2e-4 of the range).
@pytest.mark.parametrize(("model", "atol"), [(QuantizedResnet50, 0.1), (QuantizedEfficientNetLite0, 1e-3)])
def test_preprocess_array_matches_the_zoo_preprocessing(model: Any, atol: float, tmp_path: Path) -> None:
    import tensorflow as tf

    zoo = model(tmp_path, weights="random" if model is QuantizedResnet50 else None)
    photo = skimage.data.chelsea()  # PNG is lossless, so both sides see the same pixels
    ours = preprocess_array(tf.constant([encode(photo), encode(photo[:200])]), model=zoo).numpy()
    assert ours.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(ours[0], zoo.preprocess(photo)[0], atol=atol)
    np.testing.assert_allclose(ours[1], zoo.preprocess(photo[:200])[0], atol=atol)


def test_preprocess_array_takes_any_string_shape_and_grayscale() -> None:
    import tensorflow as tf

    gray = encode(skimage.data.camera())
    batch = preprocess_array(tf.constant([[gray], [gray]]), model="none", size=SIZE)
    assert batch.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    with pytest.raises(ValueError, match="no preprocessing named 'vgg'"):
        preprocess_array(tf.constant([gray]), model="vgg")


def test_saved_package_lists_every_member_with_its_digest(tmp_path: Path, models: tuple[Any, Any]) -> None:
    info = tiny_definition(*models).save(tmp_path / "out" / "service_def.zip")
    assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
    manifest = verify_package(info.path)
    assert manifest == info.manifest
    assert [(s.name, s.kind) for s in manifest.pipeline] == [
        ("preprocess", "tensorflow"),
        ("featurizer", "fpga"),
        ("classifier", "keras"),
    ]
    assert manifest.input == TensorSpecModel(name="images", dtype="string", shape=())
    assert manifest.pipeline[0].output.shape == (SIZE, SIZE, 3)
    fpga = manifest.pipeline[1]
    assert isinstance(fpga, FpgaStageSpec)
    assert (
        fpga.format.name == DEFAULT_FORMAT.name
        and fpga.weight_bytes > 0
        and fpga.path.endswith("program.fpga")
    )
    assert manifest.output == TensorSpecModel(name="probabilities", dtype="float32", shape=(len(LABELS),))
    with zipfile.ZipFile(info.path) as zf:
        assert zf.namelist()[0] == "manifest.json"
        assert sorted(zf.namelist()[1:]) == sorted(m.path for m in manifest.members)
        assert zf.read("labels.txt").decode().splitlines() == LABELS
    assert manifest.labels == "labels.txt"


def test_stages_that_do_not_chain_are_refused(tmp_path: Path, models: tuple[Any, Any]) -> None:
    featurizer, _ = models
    definition = ModelDefinition("broken")
    definition.pipeline += [FpgaStage(featurizer), KerasStage(tiny_classifier(features=32))]
    with pytest.raises(ValueError, match=r"outputs float32\[16\] but the next stage .* takes float32\[32\]"):
        definition.save(tmp_path / "p.zip")
    assert not (tmp_path / "p.zip").exists()


def test_tensorflow_stage_forms(tmp_path: Path, models: tuple[Any, Any]) -> None:
    import tensorflow as tf

    _, classifier = models

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="features")])
    def double(x: Any) -> Any:
        return 2.0 * x

    saved = tmp_path / "saved"
    tf.saved_model.save(classifier, str(saved))  # a SavedModel made elsewhere
    definition = ModelDefinition("forms")
    definition.pipeline += [
        TensorflowStage(double, output_name="doubled"),
        TensorflowStage(lambda x: x + 1.0, input_signature=tf.TensorSpec([None, 16], tf.float32)),
        TensorflowStage(saved),
    ]
    manifest = definition.save(tmp_path / "p.zip").manifest
    assert [(s.input.name, s.output.name) for s in manifest.pipeline][:2] == [
        ("features", "doubled"),
        ("input", "output"),
    ]
    assert manifest.output.shape == (len(LABELS),)


def test_tensorflow_stage_without_signature_fails_at_save(tmp_path: Path) -> None:
    definition = ModelDefinition("x")
    definition.pipeline.append(TensorflowStage(lambda x: x))
    with pytest.raises(TypeError, match="needs input_signature"):
        definition.save(tmp_path / "p.zip")


def test_notebook_form_in_a_v1_graph(tmp_path: Path, models: tuple[Any, Any]) -> None:
    import tensorflow as tf

    # The notebook form, inside an explicit graph, in a process that keeps TF2 behaviour on.
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.string, name="images")
        pixels = preprocess_array(images, model="none", size=SIZE)
        weights = tf.compat.v1.get_variable(
            "w", [SIZE * SIZE * 3, 4], initializer=tf.random_normal_initializer(0, 1e-3)
        )
        scaled = tf.matmul(tf.reshape(pixels, [-1, SIZE * SIZE * 3]), weights, name="linear")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            stage = TensorflowStage(sess, images, scaled)  # variables are frozen here, from sess
            with pytest.raises(ValueError, match="does not depend on its input"):
                TensorflowStage(sess, scaled, pixels)
            photo = encode(skimage.data.chelsea())
            expected = sess.run(scaled, {images: [photo]})
    definition = ModelDefinition("graph")
    definition.pipeline.append(stage)
    info = definition.save(tmp_path / "p.zip")
    assert info.manifest.input.name == "images" and info.manifest.output.shape == (4,)
    loaded = tf.saved_model.load(
        str(load_service_definition(info.path, dest=tmp_path / "x").root / "stages/00-tensorflow-0")
    )
    got = loaded.signatures["serving_default"](images=tf.constant([photo]))["linear"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_fpga_stage_accepts_a_program_and_the_notebook_alias(tmp_path: Path, models: tuple[Any, Any]) -> None:
    from fpgaserve.compiler.compile import compile_keras

    featurizer, classifier = models
    program = compile_keras(featurizer)
    stage = BrainWaveStage(None, program, name="fpga")
    assert isinstance(stage, FpgaStage)
    definition = ModelDefinition("prog")
    definition.pipeline += [stage, KerasStage(classifier)]
    manifest = definition.save(tmp_path / "p.zip").manifest
    assert manifest.device_memory_bytes == program.weight_bytes
    with pytest.raises(TypeError, match="FpgaStage takes a zoo model"):
        FpgaStage("not a model").program()


def test_empty_or_foreign_pipelines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pipeline is empty"):
        ModelDefinition().save(tmp_path / "p.zip")
    definition = ModelDefinition()
    definition.pipeline.append("preprocess")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pipeline\[0\] is a str"):
        definition.save(tmp_path / "p.zip")


def test_the_manifest_records_per_layer_formats_of_a_mixed_program(
    tmp_path: Path, models: tuple[Any, Any]
) -> None:
    from fpgaserve.compiler.compile import compile_keras
    from fpgaserve.npu.formats import FORMATS

    featurizer, classifier = models
    uniform = compile_keras(featurizer)
    first = next(iter(uniform.layer_formats()))
    mixed = compile_keras(featurizer)
    mixed.ops[[op.name for op in mixed.ops].index(first)].attrs["format"] = dict(
        name="msfp16", block_size=16, exponent_bits=8, mantissa_bits=7
    )
    from fpgaserve.npu.bfp import encode
    from fpgaserve.npu.program import MIXED_FORMAT_VERSION

    # Repack the op's weight in its new format, as the compiler would.
    mixed.weights[first] = encode(uniform.dequantized_weight(first).reshape(uniform.weight_shapes[first]),
                                  FORMATS["msfp16"], axis=2 if len(uniform.weight_shapes[first]) == 4 else 0)  # fmt: skip
    # 12-bit weights x 8-bit activations on that op: no repacking, only the activations' format.
    paired = compile_keras(featurizer)
    paired.ops[[op.name for op in paired.ops].index(first)].attrs["activationFormat"] = dict(
        name="msfp16", block_size=16, exponent_bits=8, mantissa_bits=7
    )
    specs = []
    for name, program in (("uniform", uniform), ("mixed", mixed), ("paired", paired)):
        definition = ModelDefinition(name)
        definition.pipeline += [FpgaStage(program, name="fpga"), KerasStage(classifier)]
        info = definition.save(tmp_path / f"{name}.zip")
        with zipfile.ZipFile(info.path) as zf:
            text = zf.read("manifest.json").decode()
        loaded = load_service_definition(info.path, dest=tmp_path / name).manifest.pipeline[0]
        assert isinstance(loaded, FpgaStageSpec)
        specs.append((text, loaded))
    (u_text, u_spec), (m_text, m_spec), (p_text, p_spec) = specs
    assert "layerActivationFormats" in p_text and "layerActivationFormats" not in m_text + u_text
    assert set(p_spec.layer_activation_formats) == {first} and p_spec.layer_formats == {}
    assert p_spec.layer_activation_formats[first].name == "msfp16" and p_spec.program_version == 3
    assert "layerFormats" in m_text
    assert "layerFormats" not in u_text and u_spec.layer_formats == {}  # older readers still read it
    assert set(m_spec.layer_formats) == {first} and m_spec.layer_formats[first].name == "msfp16"
    assert m_spec.format.name == DEFAULT_FORMAT.name and m_spec.program_version == MIXED_FORMAT_VERSION
