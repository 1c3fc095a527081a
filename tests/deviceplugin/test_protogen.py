"""The committed gRPC modules match the proto, and the proto matches the kubelet's on the wire."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fpgaserve.deviceplugin.protogen import GENERATED_FILES, PROTO_FILE, generate, source_root
from fpgaserve.deviceplugin.v1beta1 import api_pb2

# The kubelet's k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto, as field numbers and types:
# what has to match for wire compatibility (comments and layout do not).
KUBELET_API = """\
service v1beta1.Registration
  Register(v1beta1.RegisterRequest) returns v1beta1.Empty
service v1beta1.DevicePlugin
  GetDevicePluginOptions(v1beta1.Empty) returns v1beta1.DevicePluginOptions
  ListAndWatch(v1beta1.Empty) returns stream v1beta1.ListAndWatchResponse
  GetPreferredAllocation(v1beta1.PreferredAllocationRequest) returns v1beta1.PreferredAllocationResponse
  Allocate(v1beta1.AllocateRequest) returns v1beta1.AllocateResponse
  PreStartContainer(v1beta1.PreStartContainerRequest) returns v1beta1.PreStartContainerResponse
message v1beta1.DevicePluginOptions
  1 pre_start_required bool
  2 get_preferred_allocation_available bool
message v1beta1.RegisterRequest
  1 version string
  2 endpoint string
  3 resource_name string
  4 options v1beta1.DevicePluginOptions
message v1beta1.Empty
message v1beta1.ListAndWatchResponse
  1 devices repeated v1beta1.Device
message v1beta1.TopologyInfo
  1 nodes repeated v1beta1.NUMANode
message v1beta1.NUMANode
  1 ID int64
message v1beta1.Device
  1 ID string
  2 health string
  3 topology v1beta1.TopologyInfo
message v1beta1.PreStartContainerRequest
  1 devices_ids repeated string
message v1beta1.PreStartContainerResponse
message v1beta1.PreferredAllocationRequest
  1 container_requests repeated v1beta1.ContainerPreferredAllocationRequest
message v1beta1.ContainerPreferredAllocationRequest
  1 available_deviceIDs repeated string
  2 must_include_deviceIDs repeated string
  3 allocation_size int32
message v1beta1.PreferredAllocationResponse
  1 container_responses repeated v1beta1.ContainerPreferredAllocationResponse
message v1beta1.ContainerPreferredAllocationResponse
  1 deviceIDs repeated string
message v1beta1.AllocateRequest
  1 container_requests repeated v1beta1.ContainerAllocateRequest
message v1beta1.ContainerAllocateRequest
  1 devices_ids repeated string
message v1beta1.CDIDevice
  1 name string
message v1beta1.AllocateResponse
  1 container_responses repeated v1beta1.ContainerAllocateResponse
message v1beta1.ContainerAllocateResponse
  1 envs map<string, string>
  2 mounts repeated v1beta1.Mount
  3 devices repeated v1beta1.DeviceSpec
  4 annotations map<string, string>
  5 cdi_devices repeated v1beta1.CDIDevice
message v1beta1.Mount
  1 container_path string
  2 host_path string
  3 read_only bool
message v1beta1.DeviceSpec
  1 container_path string
  2 host_path string
  3 permissions string
"""

_SCALARS = {8: "bool", 9: "string", 3: "int64", 5: "int32"}  # FieldDescriptor.TYPE_* values used here


def _field_type(field: Any) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields
        return f"map<{_field_type(key)}, {_field_type(value)}>"
    base = field.message_type.full_name if field.message_type is not None else _SCALARS[field.type]
    return f"repeated {base}" if field.is_repeated else base


def _describe(file: Any) -> str:
    lines = []
    for service in file.services_by_name.values():
        lines.append(f"service {service.full_name}")
        for method in service.methods:
            returns = ("stream " if method.server_streaming else "") + method.output_type.full_name
            lines.append(f"  {method.name}({method.input_type.full_name}) returns {returns}")
    for message in file.message_types_by_name.values():
        lines.append(f"message {message.full_name}")
        lines.extend(f"  {f.number} {f.name} {_field_type(f)}" for f in message.fields)
    return "\n".join(lines) + "\n"


def test_the_proto_matches_the_kubelets_on_the_wire() -> None:
    assert _describe(api_pb2.DESCRIPTOR) == KUBELET_API


def _without_versions(text: str) -> str:
    # The protoc/grpcio-tools version is stamped into the output; only the code itself must match.
    text = re.sub(r"Protobuf Python Version: \S+", "Protobuf Python Version: X", text)
    text = re.sub(r"Domain\.PUBLIC,\s*\d+,\s*\d+,\s*\d+,", "Domain.PUBLIC, X,", text)
    return re.sub(r"GRPC_GENERATED_VERSION = '[^']+'", "GRPC_GENERATED_VERSION = 'X'", text)


def test_committed_modules_are_what_protoc_generates(tmp_path: Path) -> None:
    regenerated = generate(out_dir=tmp_path)
    committed_dir = source_root() / Path(PROTO_FILE).parent
    for name in GENERATED_FILES:
        committed = _without_versions((committed_dir / name).read_text())
        fresh = _without_versions(regenerated[name].read_text())
        assert committed == fresh, (
            f"{committed_dir / name} is out of date with api.proto; run "
            "`python -m fpgaserve.deviceplugin.protogen` and commit the result"
        )
