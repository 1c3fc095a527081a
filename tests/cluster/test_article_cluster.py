"""The whole Brainwave article on the emulated cluster: define, save, register, deploy, wait,
score a photo of a cat, delete the service and the model.

The article is read at test time (skipped when absent) and ported by ``article.SUBSTITUTIONS``
only. It runs in a fresh interpreter (``tf1`` changes TensorFlow process-wide) from a workspace
directory whose config names kmock's API server and the S3 server; the real operator reconciles,
the kubelet emulation runs the generated pod (storage-init downloads the package from S3).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import skimage.data

from fpgaserve.sdk.cluster.store import PackageStore
from tests.cluster.article import ARTICLE_PATH, SUBSTITUTIONS, article_blocks, ported
from tests.cluster.conftest import Kubelet
from tests.operator.cluster import Cluster
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NAMESPACE
from tests.runtime.tiny import encode

pytestmark = pytest.mark.skipif(not ARTICLE_PATH.is_file(), reason=f"{ARTICLE_PATH} is absent")
CATS = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}


def test_only_listed_lines_change() -> None:
    text = ARTICLE_PATH.read_text()
    original = [line.rstrip() for block in article_blocks(text) for line in block.splitlines()]
    changed = [(a, b) for a, b in zip(original, ported(text).splitlines(), strict=True) if a != b]
    assert len(changed) == len(SUBSTITUTIONS)
    assert all(
        why in ("import", "typo") or why.startswith(("internet", "Azure"))
        for _, why in SUBSTITUTIONS.values()
    )


@pytest.mark.slow
async def test_whole_article_on_the_emulated_cluster(
    workspace_dir: Path,
    cluster: Cluster,
    start_operator: StartOperator,
    kubelet: Kubelet,
    s3_store: PackageStore,
) -> None:
    script = workspace_dir / "article.py"
    script.write_text(ported(ARTICLE_PATH.read_text(), pod_port=kubelet.host_port))
    (workspace_dir / "your-image.jpg").write_bytes(encode(skimage.data.chelsea(), "jpeg"))
    env = {**os.environ, "HOME": str(workspace_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    async with start_operator():
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), cwd=workspace_dir, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await kubelet.guard(process.communicate(), timeout=1200)
    out = stdout.decode().splitlines()
    assert process.returncode == 0, (stderr.decode()[-4000:], kubelet.init_failures, kubelet.errors)
    # print(ws.name, ws.resource_group, ws.location, ws.subscription_id, sep='\n')
    at = out.index("emulated-lab")
    assert out[at + 1 : at + 4] == [NAMESPACE, str(cluster.url).rstrip("/").split("://")[1], "kmock"]
    # wait_for_deployment(True) showed its progress, then the top 5: a cat first.
    assert any(line.startswith("imagenet-infer: Ready at ") for line in out)
    top5 = [line.split(" confidence: ") for line in out if " confidence: " in line]
    assert len(top5) == 5 and top5[0][0] in CATS, top5
    assert sum(float(p) for _, p in top5) <= 1.0 + 1e-6
    # service.delete() and registered_model.delete() removed both; the pod is gone; the package
    # stays in the store (content-addressed, other models may share it).
    assert cluster.live("fpgaserve.io/v1alpha1/fpgawebservices", NAMESPACE, "imagenet-infer") is None
    assert cluster.live("fpgaserve.io/v1alpha1/fpgamodels", NAMESPACE, "resnet-50-rtai") is None
    assert "imagenet-infer" not in kubelet.pods
