"""A gRPC client for deployed services, shaped like Brainwave's ``PredictionClient``.

Role: what ``fpgaserve score --grpc`` and ``LocalWebservice.run(..., grpc=True)`` use to call a
service's gRPC port (local, port-forwarded or behind an Ingress). ``score_image`` calls TF
Serving's ``PredictionService/Predict`` the way Brainwave's client did (input ``images``, a
``DT_STRING`` tensor of the encoded image, output ``output_alias``, the key in ``authorization``
metadata); ``classify`` calls the Open Inference Protocol's ``ModelInfer`` with its classification
extension for the top-k labels. Keys are sent, never logged.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import grpc
import numpy as np
import numpy.typing as npt

from fpgaserve.sdk.client import ScoringError, read_image_bytes
from fpgaserve.server.codec import unpack_bytes_elements
from fpgaserve.server.grpc_messages import oip, tfs

__all__ = ["PredictionClient", "parse_target"]

_DT_STRING = 7


def parse_target(url: str) -> tuple[str, int, bool]:
    """``host``, ``port`` and TLS from ``grpcs://host:port``, ``https://...``, ``grpc://`` / ``http://``
    (plaintext) or a bare ``host:port`` (plaintext)."""
    parts = urlsplit(url if "://" in url else f"grpc://{url}")
    if parts.scheme not in ("grpc", "grpcs", "http", "https") or not parts.hostname:
        raise ScoringError(f"{url}: not a gRPC target; give host:port or grpcs://host:port")
    tls = parts.scheme in ("grpcs", "https")
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ScoringError(f"{url}: the port is not a number") from None
    return parts.hostname, port, tls


class PredictionClient:
    """A channel to one service's gRPC port (``close`` it, or use it as a context manager)."""

    def __init__(
        self,
        address: str,
        port: int,
        *,
        use_ssl: bool = False,
        access_token: str | None = None,
        root_certificates: bytes | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {access_token}"),) if access_token else ()
        if not use_ssl:
            self._channel = grpc.insecure_channel(self.target)
        else:
            options: list[tuple[str, Any]] = []
            if insecure:
                # gRPC cannot skip verification: trust the certificate the server presents instead,
                # under the name it was issued for.
                pem = ssl.get_server_certificate((address, port), timeout=timeout)
                root_certificates = pem.encode()
                options.append(("grpc.ssl_target_name_override", _certificate_name(pem) or address))
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(self.target, credentials, options=options)

    @classmethod
    def from_url(
        cls, url: str, *, key: str | None = None, cafile: str | Path | None = None, **kwargs: Any
    ) -> PredictionClient:
        host, port, tls = parse_target(url)
        roots = Path(cafile).read_bytes() if cafile else None
        return cls(host, port, use_ssl=tls, access_token=key, root_certificates=roots, **kwargs)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, response_class: Any) -> Any:
        call = self._channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            return call(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise ScoringError(f"{self.target}: gRPC {name}: {details}") from None

    def score_image(
        self,
        image: bytes | str | Path | IO[Any],
        *,
        model: str = "",
        input_name: str = "images",
        outputs_name: str = "output_alias",
    ) -> npt.NDArray[np.float32]:
        """One image's class probabilities, through TF Serving's ``Predict`` (Brainwave's call)."""
        request = tfs("PredictRequest")()
        request.model_spec.name = model or self.model_name()
        tensor = request.inputs[input_name]
        tensor.dtype = _DT_STRING
        tensor.tensor_shape.dim.add(size=1)
        tensor.string_val.append(read_image_bytes(image))
        request.output_filter.append(outputs_name)
        response = self._call(
            "/tensorflow.serving.PredictionService/Predict", request, tfs("PredictResponse")
        )
        output = response.outputs[outputs_name]
        dims = [d.size for d in output.tensor_shape.dim]
        values = (
            np.frombuffer(output.tensor_content, dtype="<f4")
            if output.tensor_content
            else np.asarray(output.float_val, dtype=np.float32)
        )
        probabilities: npt.NDArray[np.float32] = values.astype(np.float32).reshape(dims)[0]
        return probabilities

    def model_name(self) -> str:
        """The name of the model the service serves (OIP ``ModelMetadata`` of its one model)."""
        response = self._call(
            "/inference.GRPCInferenceService/ModelMetadata",
            oip("ModelMetadataRequest")(),
            oip("ModelMetadataResponse"),
        )
        return str(response.name)

    def classify(self, image: bytes | str | Path | IO[Any], *, k: int = 5) -> dict[str, Any]:
        """The ``k`` best classes of one image (OIP ``ModelInfer``, classification extension):
        ``{"model", "version", "top": [{"label", "index", "probability"}, ...]}``."""
        metadata = self._call(
            "/inference.GRPCInferenceService/ModelMetadata",
            oip("ModelMetadataRequest")(),
            oip("ModelMetadataResponse"),
        )
        request = oip("ModelInferRequest")(model_name=metadata.name)
        tensor = request.inputs.add(name=metadata.inputs[0].name, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(read_image_bytes(image))
        wanted = request.outputs.add(name=metadata.outputs[0].name)
        wanted.parameters["classification"].int64_param = k
        response = self._call(
            "/inference.GRPCInferenceService/ModelInfer", request, oip("ModelInferResponse")
        )
        top = []
        for element in unpack_bytes_elements(response.raw_output_contents[0]):
            value, index, *label = element.decode().split(":", 2)
            top.append(
                {
                    "label": label[0] if label else f"class {index}",
                    "index": int(index),
                    "probability": float(value),
                }
            )
        return {"model": response.model_name, "version": response.model_version, "top": top}


def _certificate_name(pem: str) -> str | None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0])
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(common[0].value) if common else None
