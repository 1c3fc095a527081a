"""The pod template the operator builds against the commands it runs: same flags, same paths.

The first two tests parse the generated argv with the real ``fpgaserve storage-init`` and
``fpgaserve serve`` parsers; the last runs the whole pod template as local processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fpgaserve.api import serving
from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec
from fpgaserve.cli.main import build_parser, command_names
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.workload import build_deployment
from tests.operator.helpers import model_body, owner, webservice_body


def pod(**spec: Any) -> dict[str, Any]:
    body = owner(webservice_body(**spec))
    model = model_body(source={"uri": "s3://models/r.zip", "sha256": "e" * 64, "secretRef": {"name": "s3"},
                               "endpoint": "http://minio:9000"})  # fmt: skip
    deployment = build_deployment(
        owner=body,
        spec=FpgaWebserviceSpec.model_validate(body["spec"]),
        model=FpgaModelSpec.model_validate(model["spec"]),
        config=OperatorConfig(),
    )
    template: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return template


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    assert command in command_names(), f"`fpgaserve {command}` is not a command"
    return build_parser().parse_args(argv)


def test_storage_init_accepts_the_init_container() -> None:
    (init,) = pod()["initContainers"]
    args = parse("storage-init", init["args"])
    assert (args.uri, args.sha256, str(args.dest)) == ("s3://models/r.zip", "e" * 64, serving.MODEL_DIR)
    assert (str(args.credentials_dir), args.endpoint) == (serving.CREDENTIALS_DIR, "http://minio:9000")
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    assert {str(args.dest), str(args.credentials_dir)} <= mounts


def test_serve_accepts_the_server_container() -> None:
    (server,) = pod(tls={"mode": "SelfSigned"})["containers"]
    args = parse("serve", server["args"])
    assert args.model_dir == serving.MODEL_DIR and args.port == server["ports"][0]["containerPort"]
    assert (args.tls_cert, args.tls_key) == (Path(serving.TLS_CERT_FILE), Path(serving.TLS_KEY_FILE))
    assert args.keys_file == Path(serving.KEYS_FILE)
    mounted = {m["mountPath"] for m in server["volumeMounts"]}
    for path in (args.model_dir, args.tls_cert, args.keys_file):
        assert any(str(path) == m or str(path).startswith(f"{m}/") for m in mounted), path


def test_pod_template_runs_locally_and_scores_a_photo(tmp_path: Path) -> None:
    """Run the generated pod as local processes: Secrets and volumes as directories, the device
    plugin's real Allocate answer, the init container then the server with their argv and env as
    generated (container paths mapped onto those directories), then score a photo over HTTPS with
    the generated key and certificate."""
    from tests.operator.local_pod import run_pod_locally

    run_pod_locally(tmp_path)


def test_dra_mode_pod_template_runs_locally_with_the_cdi_spec_and_scores_a_photo(tmp_path: Path) -> None:
    """The same in DRA mode: the operator's claim template allocated from the driver's slice, the
    claim prepared by the driver, and the container given what its CDI spec says (env, and the
    device's read-only mount), then a photo scored."""
    from tests.operator.local_pod import run_pod_locally

    run_pod_locally(tmp_path, dra=True)
