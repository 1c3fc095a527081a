"""Host stages: the TensorFlow-free form of the stages fpgaserve builds itself (numpy and Pillow).

Role: what the pipeline runtime (``fpgaserve.runtime.pipeline``) runs for a stage whose manifest
says ``runtime: host`` (docs/package.md): ``ImagePreprocessStage``, the lowering of
``preprocess_array`` (decode, central crop, bicubic resize, normalisation), and ``DenseStage``, the
lowering of a dense classifier with its softmax. Decoding is Pillow's (libjpeg-turbo, libpng, as
TensorFlow's); the resize reproduces ``tf.image.resize(method="bicubic")`` operation by operation
(TensorFlow's 1024-entry Keys table, its border renormalisation and float32 order of operations),
so the stage agrees with the SavedModel beside it within the tolerance docs/package.md states.

A JPEG whose header declares more pixels than the decode limit is decoded at 1/2, 1/4 or 1/8 scale
(libjpeg's DCT scaling, Pillow's draft mode) when that brings it under the limit; images within the
limit are always decoded whole, so their numbers are those of the TensorFlow stage.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fpgaserve.api.manifest import HostDenseSpec, HostImagePreprocessSpec, KerasStageSpec, TensorflowStageSpec
from fpgaserve.runtime.images import DECODABLE_FORMATS, check_image_header, jpeg_reduction, open_image
from fpgaserve.runtime.protocol import InvalidInput

__all__ = [
    "DEFAULT_DECODE_PIXELS",
    "PREPROCESS_TOLERANCE",
    "PROBABILITY_TOLERANCE",
    "DenseStage",
    "ImagePreprocessStage",
    "bicubic_resize",
    "decode_rgb",
    "dispatchers",
    "host_stage",
    "run_lowering",
]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
# The server's default --max-image-pixels (server/settings.py): a larger JPEG is decoded reduced.
DEFAULT_DECODE_PIXELS = 4096 * 4096
_TABLE_SIZE = 1024  # TensorFlow's kTableSize (resize_bicubic_op.cc)
# The stated tolerances against the TensorFlow stage (docs/package.md, measured on real photos in
# tests/runtime/test_host_stages.py): preprocessed pixels (after normalisation; the resize is
# bit-exact, what differs is a JPEG decoder's rounding), and class probabilities.
PREPROCESS_TOLERANCE = 1e-3
PROBABILITY_TOLERANCE = 1e-5


def _keys_table(a: float = -0.5) -> tuple[F32, F32]:
    """TensorFlow's coefficient table: the Keys kernel at offsets i/1024 (near) and 1 + i/1024 (far),
    computed in double and stored as float32, as ``InitCoeffsTable`` does."""
    x = np.arange(_TABLE_SIZE + 1, dtype=np.float64) / _TABLE_SIZE
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    x = x + 1.0
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return near.astype(np.float32), far.astype(np.float32)


_NEAR, _FAR = _keys_table()


def _axis_weights(in_size: int, out_size: int) -> tuple[npt.NDArray[np.int64], F32]:
    """Per output position, the 4 input indices (clamped) and their float32 weights, as TensorFlow's
    ``GetWeightsAndIndices<HalfPixelScaler, true>``: out-of-range taps get weight 0 and the rest are
    renormalised (multiplied by the float32 reciprocal of their sum)."""
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(centres)
    delta = (centres - base).astype(np.float32)
    offset = np.rint(delta * np.float32(_TABLE_SIZE)).astype(np.int64)  # lrintf: half to even
    start = base.astype(np.int64)
    taps = start[:, None] + np.arange(-1, 3)
    weights = np.stack(
        [_FAR[offset], _NEAR[offset], _NEAR[_TABLE_SIZE - offset], _FAR[_TABLE_SIZE - offset]], axis=1
    )
    inside = (taps >= 0) & (taps < in_size)
    weights = np.where(inside, weights, np.float32(0)).astype(np.float32)
    total = ((weights[:, 0] + weights[:, 1]) + weights[:, 2]) + weights[:, 3]
    usable = np.abs(total) >= np.float32(1000) * np.finfo(np.float32).tiny
    reciprocal = np.where(usable, np.float32(1) / np.where(usable, total, 1), np.float32(1))
    weights = np.where(usable[:, None], weights * reciprocal[:, None].astype(np.float32), weights)
    return np.clip(taps, 0, in_size - 1), weights.astype(np.float32)


@numba.njit(nogil=True, cache=True, error_model="numpy")  # type: ignore[untyped-decorator]
def _rows_pass(src: npt.NDArray[Any], taps: npt.NDArray[np.int64], weights: F32) -> F32:  # pragma: no cover
    # out[i, k] = src[t0, k]*w0 + src[t1, k]*w1 + src[t2, k]*w2 + src[t3, k]*w3, left to right in
    # float32 (TensorFlow's Interpolate1D). Compiled without fastmath, so no multiply-add is fused
    # and the results are TensorFlow's bit for bit; the inner loop runs along contiguous memory.
    out = np.empty((taps.shape[0], src.shape[1]), np.float32)
    for i in range(taps.shape[0]):
        t0, t1, t2, t3 = taps[i, 0], taps[i, 1], taps[i, 2], taps[i, 3]
        w0, w1, w2, w3 = weights[i, 0], weights[i, 1], weights[i, 2], weights[i, 3]
        for k in range(src.shape[1]):
            v = np.float32(src[t0, k]) * w0
            v = v + np.float32(src[t1, k]) * w1
            v = v + np.float32(src[t2, k]) * w2
            out[i, k] = v + np.float32(src[t3, k]) * w3
    return out


@numba.njit(nogil=True, cache=True, error_model="numpy")  # type: ignore[untyped-decorator]
def _resize_kernel(
    image: npt.NDArray[Any], rows: npt.NDArray[np.int64], row_w: F32, cols: npt.NDArray[np.int64], col_w: F32
) -> F32:  # pragma: no cover - compiled
    # Rows first, then columns as rows of the transposed result. The transposes are loops, not
    # np.ascontiguousarray of a transposed view: numba compiles that copy with a shape-mismatch
    # error that formats the shapes into its message, which pulled numba's whole string machinery
    # into this kernel: about 10 s of a cold start's compile, and 9x the code to load (issue 14).
    height, width, channels = image.shape
    out_h, out_w = rows.shape[0], cols.shape[0]
    vertical = _rows_pass(image.reshape(height, width * channels), rows, row_w)
    across = np.empty((width, out_h * channels), np.float32)
    for y in range(out_h):
        for x in range(width):
            for c in range(channels):
                across[x, y * channels + c] = vertical[y, x * channels + c]
    done = _rows_pass(across, cols, col_w)
    out = np.empty((out_h, out_w, channels), np.float32)
    for y in range(out_h):
        for x in range(out_w):
            for c in range(channels):
                out[y, x, c] = done[x, y * channels + c]
    return out


def dispatchers() -> dict[str, Any]:
    """This module's numba kernels by name, for ``fpgaserve warm-kernels`` (``npu.precompile``) to
    compile into the image and count in its cache."""
    return {"host_stages.rows_pass": _rows_pass, "host_stages.resize_kernel": _resize_kernel}


def bicubic_resize(image: npt.NDArray[Any], *, height: int, width: int) -> F32:
    """``tf.image.resize(image, [height, width], method="bicubic")`` of one (H, W, C) image.

    Rows first, then columns, as TensorFlow's kernel computes them; float32 throughout.
    """
    rows, row_weights = _axis_weights(image.shape[0], height)
    cols, col_weights = _axis_weights(image.shape[1], width)
    result: F32 = _resize_kernel(np.ascontiguousarray(image), rows, row_weights, cols, col_weights)
    return result


def decode_rgb(data: bytes, *, index: int, max_pixels: int = DEFAULT_DECODE_PIXELS) -> U8:
    """An encoded image as uint8 (H, W, 3), as ``tf.io.decode_image(channels=3,
    expand_animations=False)`` decodes it: the first frame, gray replicated, alpha dropped (not
    composited), 16-bit samples reduced to their high byte. Raises ``InvalidInput``.

    A JPEG is decoded by libjpeg-turbo as TensorFlow calls it (the fast integer DCT, fancy
    upsampling; simplejpeg: Pillow offers only the accurate DCT, up to 18 levels away on a quality-95
    photo), at the DCT scale that brings it under ``max_pixels`` (``jpeg_reduction``) if it is over.
    """
    check_image_header(data, index=index, formats=DECODABLE_FORMATS)
    try:
        with open_image(data) as image:
            if image.format == "JPEG":
                decoded = _decode_jpeg(data, image, max_pixels=max_pixels)
                if decoded is not None:
                    return decoded
            image.seek(0)
            image.load()
            return _as_rgb(image)
    except (OSError, SyntaxError, ValueError, struct.error, EOFError):
        raise InvalidInput("not a decodable image (its data is damaged)", index=index) from None


def _decode_jpeg(data: bytes, image: Any, *, max_pixels: int) -> U8 | None:
    """libjpeg-turbo's decode of a JPEG (None for a colour space it leaves to Pillow)."""
    import simplejpeg

    width, height = image.size
    factor = jpeg_reduction(width, height, max_pixels=max_pixels) or 1
    if image.mode not in ("L", "RGB", "CMYK"):
        if factor > 1:
            image.draft(image.mode, (width // factor, height // factor))  # Pillow's DCT scaling
        return None
    cmyk = image.mode == "CMYK"
    # Exactly 1/factor: the smallest libjpeg scale (n/8) keeping ceil(size/factor), at most 1/factor.
    scaled = {"min_width": -(-width // factor), "min_height": -(-height // factor)} if factor > 1 else {}
    # strict: a truncated or corrupt stream is refused (ValueError), as TensorFlow refuses it.
    decoded = simplejpeg.decode_jpeg(
        data, colorspace="CMYK" if cmyk else "RGB", fastdct=True, fastupsample=False,
        min_factor=float(factor), strict=True, **scaled,
    )  # fmt: skip
    if cmyk:  # TensorFlow's conversion of (Adobe, inverted) CMYK: channel * K / 255
        wide = np.asarray(decoded, dtype=np.uint16)
        return ((wide[..., :3] * wide[..., 3:]) // 255).astype(np.uint8)
    return np.asarray(decoded, dtype=np.uint8)


def _as_rgb(image: Any) -> U8:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit gray: libpng's strip-16 keeps the high byte (Pillow's convert would clip instead).
        gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")  # RGBA/LA/P drop alpha as TensorFlow does; L and 1 replicate
    return np.asarray(image, dtype=np.uint8)


class ImagePreprocessStage:
    """``preprocess_array``'s lowering: a batch of encoded images in, float32 (N, size, size, 3) out."""

    def __init__(self, host: HostImagePreprocessSpec, *, max_pixels: int = DEFAULT_DECODE_PIXELS) -> None:
        self.host = host
        self.max_pixels = max_pixels
        self._ratio = host.size / (host.size + host.crop_padding)
        self._mean = np.asarray(host.mean, np.float32)
        self._std = np.asarray(host.std, np.float32)

    def preprocess_one(self, data: bytes, *, index: int) -> F32:
        """One image: decode, crop the central square, resize (not yet normalised)."""
        image = decode_rgb(data, index=index, max_pixels=self.max_pixels)
        height, width = image.shape[:2]
        # float64 product truncated, as the TF stage and the numpy twin (sdk.imageproc) compute it.
        crop = max(int(self._ratio * float(min(height, width))), 1)
        top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
        window = image[top : top + crop, left : left + crop]
        return bicubic_resize(window, height=self.host.size, width=self.host.size)

    def run(self, x: Any) -> tuple[npt.NDArray[Any], float]:
        side = self.host.size
        batch = np.empty((len(x), side, side, 3), np.float32)

        # One image after another: Pillow's parsing holds the GIL, and two threads measured no
        # faster than one for this stage on 2 cores (the resize kernel itself needs no GIL).
        for index, item in enumerate(x):
            batch[index] = self.preprocess_one(bytes(item), index=index)
        if self.host.channel_order == "bgr":
            batch = batch[..., ::-1]
        out = (batch - self._mean) / self._std
        return out.astype(np.float32, copy=False), 0.0

    def close(self) -> None:
        pass


class DenseStage:
    """A dense layer with its activation (a zoo classifier's lowering), float32 numpy."""

    def __init__(self, *, kernel: npt.NDArray[Any], bias: npt.NDArray[Any], activation: str) -> None:
        if kernel.dtype != np.float32 or bias.dtype != np.float32:
            raise ValueError("host dense weights must be float32")
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
            raise ValueError(f"host dense weights of shapes {kernel.shape} and {bias.shape} do not fit")
        self.activation = activation
        self.kernel = np.ascontiguousarray(kernel)
        self.bias = bias

    def run(self, x: Any) -> tuple[npt.NDArray[Any], float]:
        # One row at a time: a batched GEMM's result depends on the batch size (OpenBLAS picks other
        # kernels and blockings), and the server's dynamic batches must not change an input's answer.
        features = np.asarray(x, np.float32)
        rows = features.reshape(-1, features.shape[-1])
        logits = np.empty((rows.shape[0], self.kernel.shape[1]), np.float32)
        for index, row in enumerate(rows):
            np.matmul(row, self.kernel, out=logits[index])
        logits = logits.reshape(*features.shape[:-1], self.kernel.shape[1]) + self.bias
        if self.activation == "softmax":
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            logits = shifted / shifted.sum(axis=-1, keepdims=True)
        return logits.astype(np.float32, copy=False), 0.0

    def close(self) -> None:
        pass


def _load_dense(spec: TensorflowStageSpec | KerasStageSpec, weights_file: Path) -> DenseStage:
    assert isinstance(spec.host, HostDenseSpec)
    with np.load(weights_file, allow_pickle=False) as arrays:
        kernel, bias = arrays["kernel"], arrays["bias"]
    try:
        stage = DenseStage(kernel=kernel, bias=bias, activation=spec.host.activation)
    except ValueError as exc:
        raise RuntimeError(f"stage {spec.name!r}: {exc}") from None
    fits = (spec.input.shape in ((kernel.shape[0],), (None,))) and spec.output.shape in (
        (kernel.shape[1],),
        (None,),
    )
    if not fits:
        raise RuntimeError(
            f"stage {spec.name!r}: host weights {kernel.shape} do not fit "
            f"{spec.input.describe()} -> {spec.output.describe()}"
        )
    return stage


def host_stage(
    spec: TensorflowStageSpec | KerasStageSpec, *, member_path: Path | None, max_pixels: int
) -> ImagePreprocessStage | DenseStage:
    """The host stage of ``spec`` (whose ``runtime`` is host); ``member_path``: its weights file."""
    if isinstance(spec.host, HostImagePreprocessSpec):
        return ImagePreprocessStage(spec.host, max_pixels=max_pixels)
    assert member_path is not None
    return _load_dense(spec, member_path)


def run_lowering(host: dict[str, Any], arrays: dict[str, npt.NDArray[np.float32]], x: Any) -> F32:
    """Run a lowering given as its manifest fields (the SDK's check against TensorFlow at package time)."""
    if host["op"] == "image-preprocess":
        stage: ImagePreprocessStage | DenseStage = ImagePreprocessStage(
            HostImagePreprocessSpec.model_validate(host)
        )
    else:
        stage = DenseStage(kernel=arrays["kernel"], bias=arrays["bias"], activation=host["activation"])
    out, _ = stage.run(x)
    return np.asarray(out, np.float32)
