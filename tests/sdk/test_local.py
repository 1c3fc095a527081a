"""LocalWebservice and `fpgaserve score`: a real server process, real HTTPS, real keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fpgaserve.npu.precompile import COMPILING
from fpgaserve.sdk.client import ScoringError, score
from fpgaserve.sdk.local import DeploymentError, LocalWebservice
from tests.runtime.tiny import LABELS, encode, tiny_classifier, tiny_definition, tiny_featurizer


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "service_def.zip"
    tiny_definition(tiny_featurizer(), tiny_classifier()).save(path)
    return path


@pytest.fixture(scope="module")
def service(package: Path) -> Iterator[LocalWebservice]:
    with LocalWebservice.deploy(package, name="test-local", grpc=True, timeout=300) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    path.write_bytes(encode(skimage.data.chelsea(), "jpeg"))
    return path


def test_run_returns_probabilities_by_class_id(service: LocalWebservice, photo: Path) -> None:
    assert service.scoring_uri.startswith("https://127.0.0.1:")
    probabilities = service.run(photo)
    assert len(probabilities) == len(LABELS)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    with photo.open() as text_mode_file:  # the article opens the image in text mode
        assert service.run(text_mode_file) == probabilities


def test_run_over_grpc_gives_the_same_probabilities(service: LocalWebservice, photo: Path) -> None:
    # TF Serving's Predict on the gRPC port, with the service's key and self-signed certificate.
    assert service.grpc_port is not None
    over_grpc = service.run(photo, grpc=True)
    assert over_grpc == pytest.approx(service.run(photo), abs=1e-6)


def test_both_keys_work_and_a_wrong_key_is_refused(service: LocalWebservice, photo: Path) -> None:
    primary, secondary = service.get_keys()
    assert primary != secondary
    for key in (primary, secondary):
        assert score(service.scoring_uri, photo, key=key, cafile=service.cert_file)["results"]
    with pytest.raises(ScoringError) as refused:
        score(service.scoring_uri, photo, key="not-the-key", cafile=service.cert_file)
    assert refused.value.status == 401
    assert primary not in str(refused.value)


def test_score_command_prints_top_labels(service: LocalWebservice, photo: Path) -> None:
    argv = [sys.executable, "-m", "fpgaserve.cli.main", "score", service.scoring_uri, str(photo),
            "--key", service.get_keys()[0], "--cacert", str(service.cert_file)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert any(label in done.stdout for label in LABELS)
    bad = subprocess.run([*argv[:-4], "--key", "wrong", "--cacert", str(service.cert_file)],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 2 and "HTTP 401" in bad.stderr


def test_delete_stops_the_server_and_removes_its_secrets(package: Path, photo: Path, tmp_path: Path) -> None:
    # Started with an empty kernel cache: its log says that it compiles them, passed on as it comes.
    said: list[str] = []
    service = LocalWebservice.deploy(package, name="test-delete", tls=False, timeout=300, progress=said.append,
                                     extra_env={"NUMBA_CACHE_DIR": str(tmp_path / "kernels")})  # fmt: skip
    assert any("listening on" in line for line in said), said
    assert sum(COMPILING in line for line in said) == 1, said
    workdir = service.log_file.parent
    assert (workdir / "keys.json").exists()
    service.delete()
    assert not workdir.exists()
    with pytest.raises(ScoringError):
        score(service.scoring_uri, photo, key=service.get_keys()[0], timeout=5)


def test_a_package_that_cannot_load_fails_the_deployment_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "service_def.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(DeploymentError) as failed:
        LocalWebservice.deploy(broken, name="test-broken", timeout=120)
    assert "exited" in str(failed.value)
