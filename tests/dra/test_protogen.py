"""The committed DRA and registration stubs match their protos, and the protos the kubelet's."""

from __future__ import annotations

from pathlib import Path

from fpgaserve.deviceplugin.protogen import source_root
from fpgaserve.dra.pluginregistration import api_pb2 as reg_pb2
from fpgaserve.dra.protogen import GENERATED_FILES, generate_all
from fpgaserve.dra.v1 import api_pb2
from tests.deviceplugin.test_protogen import _describe, _without_versions

# k8s.io/kubelet/pkg/apis/dra/v1/api.proto, as field numbers and types (what the wire needs).
KUBELET_DRA_V1 = """\
service k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin
  NodePrepareResources(k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesRequest) returns k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesResponse
  NodeUnprepareResources(k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesRequest) returns k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesResponse
message k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesRequest
  1 claims repeated k8s.io.kubelet.pkg.apis.dra.v1.Claim
message k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesResponse
  1 claims map<string, k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourceResponse>
message k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourceResponse
  1 devices repeated k8s.io.kubelet.pkg.apis.dra.v1.Device
  2 error string
message k8s.io.kubelet.pkg.apis.dra.v1.Device
  1 request_names repeated string
  2 pool_name string
  3 device_name string
  4 cdi_device_ids repeated string
message k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesRequest
  1 claims repeated k8s.io.kubelet.pkg.apis.dra.v1.Claim
message k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesResponse
  1 claims map<string, k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourceResponse>
message k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourceResponse
  1 error string
message k8s.io.kubelet.pkg.apis.dra.v1.Claim
  1 namespace string
  2 uid string
  3 name string
"""

# k8s.io/kubelet/pkg/apis/pluginregistration/v1/api.proto (its package is "pluginregistration").
KUBELET_REGISTRATION_V1 = """\
service pluginregistration.Registration
  GetInfo(pluginregistration.InfoRequest) returns pluginregistration.PluginInfo
  NotifyRegistrationStatus(pluginregistration.RegistrationStatus) returns pluginregistration.RegistrationStatusResponse
message pluginregistration.PluginInfo
  1 type string
  2 name string
  3 endpoint string
  4 supported_versions repeated string
message pluginregistration.RegistrationStatus
  1 plugin_registered bool
  2 error string
message pluginregistration.RegistrationStatusResponse
message pluginregistration.InfoRequest
"""


def test_the_protos_match_the_kubelets_on_the_wire() -> None:
    assert _describe(api_pb2.DESCRIPTOR) == KUBELET_DRA_V1
    assert _describe(reg_pb2.DESCRIPTOR) == KUBELET_REGISTRATION_V1


def test_committed_modules_are_what_protoc_generates(tmp_path: Path) -> None:
    for proto, regenerated in generate_all(out_dir=tmp_path).items():
        committed_dir = source_root() / Path(proto).parent
        for name in GENERATED_FILES:
            committed = _without_versions((committed_dir / name).read_text())
            fresh = _without_versions(regenerated[name].read_text())
            assert committed == fresh, (
                f"{committed_dir / name} is out of date with {proto}; run "
                "`python -m fpgaserve.dra.protogen` and commit the result"
            )
