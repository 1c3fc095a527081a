"""The console script: help on every command, classify end to end, and clean user errors."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fpgaserve.cli.main import build_parser, command_names, main
from fpgaserve.npu.formats import FORMATS


def fpgaserve(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # As a user runs it: without the test session's own TensorFlow log setting (tests/conftest.py).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "fpgaserve.cli.main", *args], capture_output=True, text=True, timeout=timeout,
        env=env,
    )  # fmt: skip


@pytest.mark.parametrize("command", command_names())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    assert "usage: fpgaserve" in capsys.readouterr().out


def _arguments(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    """Every argument of ``parser`` and of its subcommands, with the command line that reaches it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _arguments(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_argument_says_what_it_is_and_its_default() -> None:
    # A bare '(default: ...)' or no help at all left users guessing (dra-driver, service get-logs).
    undocumented, silent_defaults = [], []
    for path, action in _arguments(build_parser(), "fpgaserve"):
        name = f"{path} {'/'.join(action.option_strings) or action.dest}"
        text = (action.help or "").strip()
        if not text or text.startswith("(default"):
            undocumented.append(name)
        elif type(action.default) in (int, float, str) and "default" not in text:
            silent_defaults.append(f"{name} ({action.default!r})")
    assert not undocumented, undocumented
    assert not silent_defaults, silent_defaults


def test_the_examples_in_help_parse(capsys: pytest.CaptureFixture[str]) -> None:
    # An example that names a flag the command lost, or misses a required one, teaches the wrong thing.
    examples = []
    for name in command_names():
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        _, _, listed = capsys.readouterr().out.partition("\nexamples:\n")
        for line in listed.splitlines():
            words = shlex.split(line.split(" | ")[0])  # the command, without what it is piped to
            if "fpgaserve" in words:
                examples.append(words[words.index("fpgaserve") + 1 :])
    assert {words[0] for words in examples} >= {"quickstart", "classify", "score", "serve", "compile"}
    for words in examples:
        build_parser().parse_args(words)  # SystemExit (2) on an unknown flag or a missing argument


def test_help_does_not_import_tensorflow() -> None:
    code = "import sys; from fpgaserve.cli.main import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_command_list_needs_no_subcommand_module() -> None:
    # COMMANDS' help lines are what each module's add_parser says: --help lists the same either way.
    assert build_parser(only="").format_help() == build_parser().format_help()


def test_a_command_imports_its_own_module_only() -> None:
    code = (
        "import sys; from fpgaserve.cli.main import COMMANDS, build_parser; "
        "args = build_parser(only='serve').parse_args(['serve', 'x', '--port', '9']); "
        "print(args.port, sorted(c.module for c in COMMANDS.values() if c.module in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "9 ['fpgaserve.cli.serve']"


def test_help_lists_every_command_and_a_typo_is_refused() -> None:
    done = fpgaserve("--help")
    assert done.returncode == 0, done.stderr
    for name in command_names():
        assert name in done.stdout
    typo = fpgaserve("-v", "serv", "x")
    assert typo.returncode == 2 and "invalid choice: 'serv'" in typo.stderr, typo.stderr


def test_classify_prints_top5_json_with_a_cat(tmp_path: Path) -> None:
    done = fpgaserve("classify", "sample:chelsea", "--json", "--model-path", str(tmp_path))
    assert done.returncode == 0, done.stderr
    # A quiet command line: none of TensorFlow's start-up notices.
    assert "cpu_feature_guard" not in done.stderr and "absl::" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert len(report["top"]) == 5
    assert "cat" in report["top"][0]["label"]
    assert report["deviceSeconds"] > 0 and report["featurizerWallSeconds"] > 0
    confidences = [t["confidence"] for t in report["top"]]
    assert confidences == sorted(confidences, reverse=True)


def test_classify_refuses_a_non_image_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "not-an-image.jpg"
    bogus.write_bytes(b"this is text")
    assert main(["classify", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and "Traceback" not in err


def test_model_register_names_a_missing_package_before_looking_for_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "service_def.zip"
    config = tmp_path / "no-kubeconfig"
    assert main(["model", "register", str(missing), "--name", "m", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err and "kubeconfig" not in err and "Traceback" not in err


def test_service_update_turns_key_auth_off_and_on_again_and_leaves_it_by_default() -> None:
    parse = build_parser().parse_args
    assert parse(["service", "update", "web", "--no-auth"]).auth is False
    assert parse(["service", "update", "web", "--auth"]).auth is True
    assert parse(["service", "update", "web"]).auth is None  # unchanged
    assert parse(["service", "create", "web", "--model", "m"]).auth is True
    assert parse(["service", "create", "web", "--model", "m", "--no-auth"]).auth is False


def test_classify_refuses_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "sample:coffee", "--format", "fp4"]) == 2
    assert f"known formats: {', '.join(FORMATS)}" in capsys.readouterr().err


def test_compile_writes_a_program_that_loads(tmp_path: Path) -> None:
    import keras

    from fpgaserve.npu.program import load_program

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    out = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, out).save(tmp_path / "tiny.keras")
    done = fpgaserve(
        "compile", str(tmp_path / "tiny.keras"), "-o", str(tmp_path / "tiny.fpga"), "--format", "msfp12"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["format"] == "msfp12" and summary["outputShape"] == [8]
    assert load_program(tmp_path / "tiny.fpga").fmt.name == "msfp12"


def test_compile_refuses_an_unsupported_layer_by_name(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    keras.Model(inp, keras.layers.LeakyReLU(name="leaky")(inp)).save(tmp_path / "bad.keras")
    done = fpgaserve("compile", str(tmp_path / "bad.keras"), "-o", str(tmp_path / "bad.fpga"))
    assert done.returncode == 2
    assert "layer 'leaky' of type LeakyReLU is not supported" in done.stderr
    assert not (tmp_path / "bad.fpga").exists()


def _mobile_model(path: Path) -> None:
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(24, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(10, name="fc")(x)).save(path)


def test_compile_searches_per_layer_formats_under_an_accuracy_budget(tmp_path: Path) -> None:
    import numpy as np

    from fpgaserve.npu.program import load_program

    _mobile_model(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32))
    common = ("compile", str(tmp_path / "m.keras"), "--calibration", str(tmp_path / "calib.npy"))
    # Generous timeouts: each run imports TensorFlow and runs the emulator dozens of times.
    done = fpgaserve(
        *common, "-o", str(tmp_path / "m.fpga"), "--accuracy-budget", "cosine>=0.99", timeout=900
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["precision"]["budget"] == "cosine>=0.99" and summary["precision"]["cosine"] >= 0.99
    program = load_program(tmp_path / "m.fpga")
    assert list(program.layer_formats()) == ["stem", "dw", "pw", "fc"]
    assert summary["weightBytes"] == program.weight_bytes
    # A budget the candidates cannot keep: exit 2 naming the limiting layers, no file written.
    done = fpgaserve(
        *common, "-o", str(tmp_path / "bad.fpga"), "--format", "auto", "--accuracy-budget", "cosine>=0.999999",
        "--candidates", "ms-fp8,ms-fp8/msfp12,msfp12", timeout=900,
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot be met" in done.stderr and "limit it most" in done.stderr
    assert not (tmp_path / "bad.fpga").exists()


def test_compile_refuses_a_bad_budget_or_search_options_without_auto(tmp_path: Path) -> None:
    _mobile_model(tmp_path / "m.keras")
    done = fpgaserve(
        "compile", str(tmp_path / "m.keras"), "-o", str(tmp_path / "x.fpga"), "--accuracy-budget", "best"
    )
    assert done.returncode == 2 and "cannot read accuracy budget 'best'" in done.stderr
    done = fpgaserve(
        "compile", str(tmp_path / "m.keras"), "-o", str(tmp_path / "x.fpga"), "--candidates", "msfp16"
    )
    assert done.returncode == 2 and "go with --format auto" in done.stderr
    # A weights/activations pair with an unknown half, and one with three parts.
    for candidates, message in (
        ("msfp16,int12-bfp/bogus", "in 'int12-bfp/bogus': unknown BFP format 'bogus'"),
        ("msfp16/int7-bfp/int12-bfp", "WEIGHTS/ACTIVATIONS"),
    ):
        done = fpgaserve(
            "compile", str(tmp_path / "m.keras"), "-o", str(tmp_path / "x.fpga"), "--format", "auto",
            "--candidates", candidates,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert not (tmp_path / "x.fpga").exists()


def test_compile_corrects_biases_on_calibration_images_when_asked(tmp_path: Path) -> None:
    import numpy as np

    from fpgaserve.npu.program import load_program

    _mobile_model(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32))
    args = ("compile", str(tmp_path / "m.keras"), "--format", "msfp16")
    done = fpgaserve(
        *args, "-o", str(tmp_path / "c.fpga"), "--bias-correction", "--calibration", str(tmp_path / "calib.npy"),
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["biasCorrection"] == {"calibrationExamples": 8}
    done = fpgaserve(*args, "-o", str(tmp_path / "p.fpga"), "--no-bias-correction", timeout=600)
    assert done.returncode == 0, done.stderr
    corrected, plain = load_program(tmp_path / "c.fpga"), load_program(tmp_path / "p.fpga")
    assert "biasCorrection" not in plain.metadata
    assert not np.array_equal(corrected.biases["pw"], plain.biases["pw"])
    # Calibration images without a search or a correction have nothing to do: refused.
    done = fpgaserve(
        *args, "-o", str(tmp_path / "x.fpga"), "--calibration", str(tmp_path / "calib.npy"), timeout=600
    )
    assert done.returncode == 2 and "--bias-correction" in done.stderr


def test_compile_adapts_weights_on_calibration_images_when_asked(tmp_path: Path) -> None:
    import numpy as np

    from fpgaserve.npu.program import load_program

    _mobile_model(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32))
    args = (
        "compile",
        str(tmp_path / "m.keras"),
        "--format",
        "msfp16",
        "--calibration",
        str(tmp_path / "calib.npy"),
    )
    done = fpgaserve(*args, "-o", str(tmp_path / "a.fpga"), "--adapt-weights", "refit", timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["weightAdaptation"]["method"] == "refit"
    assert load_program(tmp_path / "a.fpga").metadata["weightAdaptation"]["calibrationExamples"] == 8
    done = fpgaserve(*args, "-o", str(tmp_path / "x.fpga"), "--adapt-weights", "distill", timeout=600)
    assert done.returncode == 2 and "--adapt-weights" in done.stderr and "permute" in done.stderr
    assert not (tmp_path / "x.fpga").exists()


def _verbs(group: str) -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(only=group)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verbs = next(a for a in sub.choices[group]._actions if isinstance(a, argparse._SubParsersAction))
    return dict(verbs.choices)


def test_the_cluster_commands_show_only_the_options_they_use(capsys: pytest.CaptureFixture[str]) -> None:
    # --connect reaches a pod: only `service run` does. get-logs prints the log as it is: no --output.
    for group in ("model", "service"):
        for verb, parser in _verbs(group).items():
            options = {o for a in parser._actions for o in a.option_strings}
            assert ("--connect" in options) == (group == "service" and verb == "run"), (group, verb)
            assert ("--output" in options) == (verb != "get-logs"), (group, verb)
    with pytest.raises(SystemExit) as done:
        main(["model", "list", "--connect", "10.0.0.5:8443"])
    assert done.value.code == 2 and "unrecognized arguments: --connect" in capsys.readouterr().err
    args = build_parser().parse_args(["service", "run", "web", "cat.jpg", "--connect", "10.0.0.5:8443"])
    assert args.connect == "10.0.0.5:8443"
