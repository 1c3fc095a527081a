"""DRA mode of an FpgaWebservice: the ResourceClaimTemplate, the pod template's claim, and the
reconciler creating, replacing and pruning the template (kmock's emulator)."""

from __future__ import annotations

from typing import Any

import kmock
import kubernetes_validate
import pydantic
import pytest

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME, DRA_DEVICE_CLASS, ENV_REQUIRE_DEVICE
from fpgaserve.api.crd_models import FpgaModelSpec, FpgaSpec, FpgaWebserviceSpec
from fpgaserve.api.kinds import FPGAMODEL
from fpgaserve.operator.claims import build_resource_claim_template, device_selector
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.reconcile_webservice import reconcile_webservice
from fpgaserve.operator.workload import build_deployment
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE, create, model_body, owner, webservice_body

MiB = 1 << 20
TEMPLATES = "resource.k8s.io/v1/resourceclaimtemplates"
DRA = {"mode": "DRA", "deviceModel": "pbs-s10", "count": 2}


def _valid(obj: dict[str, Any]) -> None:
    # resource.k8s.io/v1 is served from Kubernetes 1.34 on.
    for version in ("1.34", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_selector_asks_for_the_model_and_enough_weight_memory() -> None:
    assert device_selector(device_model="pbs-s10", min_weight_memory_bytes=40 * MiB) == (
        'device.attributes["fpga.fpgaserve.io"].model == "pbs-s10" && '
        'device.capacity["fpga.fpgaserve.io"].weightMemory.compareTo(quantity("40Mi")) >= 0'
    )
    assert device_selector(device_model=None, min_weight_memory_bytes=1000) == (
        'device.capacity["fpga.fpgaserve.io"].weightMemory.compareTo(quantity("1000")) >= 0'
    )
    assert device_selector(device_model=None, min_weight_memory_bytes=None) is None


def test_the_template_is_valid_and_only_in_dra_mode() -> None:
    web = owner(webservice_body(fpga=DRA))
    spec = FpgaWebserviceSpec.model_validate(web["spec"])
    template = build_resource_claim_template(owner=web, spec=spec, device_memory_bytes=40 * MiB)
    assert template is not None
    _valid(template)
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["name"] == "fpga"
    assert request["exactly"]["deviceClassName"] == DRA_DEVICE_CLASS and request["exactly"]["count"] == 2
    assert 'quantity("40Mi")' in request["exactly"]["selectors"][0]["cel"]["expression"]
    for fpga in ({}, {"mode": "DRA", "count": 0}):
        other = FpgaWebserviceSpec.model_validate({**web["spec"], "fpga": fpga})
        assert build_resource_claim_template(owner=web, spec=other, device_memory_bytes=1) is None


def test_device_model_needs_dra_mode() -> None:
    with pytest.raises(pydantic.ValidationError, match="deviceModel applies to mode DRA only"):
        FpgaSpec.model_validate({"deviceModel": "pbs-s10"})


def test_the_pod_claims_instead_of_counting() -> None:
    model = FpgaModelSpec.model_validate(model_body()["spec"])
    web = owner(webservice_body(fpga=DRA))
    deployment = build_deployment(
        owner=web, spec=FpgaWebserviceSpec.model_validate(web["spec"]), model=model, config=OperatorConfig()
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "fpga", "resourceClaimTemplateName": "web-fpga"}]
    (server,) = pod["containers"]
    assert server["resources"]["claims"] == [{"name": "fpga"}]
    assert DEFAULT_RESOURCE_NAME not in server["resources"]["limits"]
    assert {"name": ENV_REQUIRE_DEVICE, "value": "1"} in server["env"]
    _valid(deployment)


def _declare_templates(cluster: Cluster) -> None:
    cluster.resources[TEMPLATES] = kmock.ResourceInfo(
        kind="ResourceClaimTemplate",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    )


async def test_the_reconciler_creates_replaces_and_prunes_the_template(cluster: Cluster, kube: Kube) -> None:
    _declare_templates(cluster)
    await create(cluster, model_body())
    await kube.patch(
        FPGAMODEL,
        NAMESPACE,
        "resnet",
        {"status": {"phase": "Ready", "deviceMemoryBytes": 40 * MiB}},
        subresource="status",
    )
    body = await create(cluster, webservice_body(fpga=DRA))
    config = OperatorConfig()
    outcome = await reconcile_webservice(kube=kube, config=config, body=body)
    assert outcome.error is None, outcome.error
    live = cluster.live(TEMPLATES, NAMESPACE, "web-fpga")
    assert live is not None and live["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert 'quantity("40Mi")' in str(live["spec"])
    uid = live["metadata"]["uid"]

    await reconcile_webservice(kube=kube, config=config, body=body)  # idempotent: the same object
    assert cluster.live(TEMPLATES, NAMESPACE, "web-fpga")["metadata"]["uid"] == uid  # type: ignore[index]

    # A new package needing more memory: the immutable template is replaced, not patched.
    await kube.patch(
        FPGAMODEL, NAMESPACE, "resnet", {"status": {"deviceMemoryBytes": 60 * MiB}}, subresource="status"
    )
    await reconcile_webservice(kube=kube, config=config, body=body)
    replaced = cluster.live(TEMPLATES, NAMESPACE, "web-fpga")
    assert (
        replaced is not None
        and replaced["metadata"]["uid"] != uid
        and 'quantity("60Mi")' in str(replaced["spec"])
    )

    back = {**body, "spec": {**body["spec"], "fpga": {"count": 1}}}
    outcome = await reconcile_webservice(kube=kube, config=config, body=back)
    assert cluster.live(TEMPLATES, NAMESPACE, "web-fpga") is None
    assert "ResourceClaimTemplate web-fpga" in [e.message for e in outcome.events if e.reason == "Deleted"]
