"""Read PyTorch *legacy* (pre-1.6, non-zip) ``.pth`` state dicts without torch.

A legacy file is a run of pickles followed by raw storage bytes:

1. magic number ``0x1950a86a20f9469cfc6c``
2. protocol version (1001)
3. system info (``little_endian``, type sizes)
4. the object itself (a state dict); each tensor is rebuilt by
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and
   each storage is a *persistent id* ``("storage", StorageType, key, location, numel, view)``
5. the list of storage keys, in the order their bytes follow
6. per key: an 8-byte element count, then ``count * itemsize`` raw bytes.

The unpickler here is restricted: ``find_class`` resolves only the tensor-rebuild
functions, the storage types and ``collections.OrderedDict`` (to local stand-ins,
never to torch), and refuses everything else, so a malicious file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["LegacyFormatError", "load_state_dict", "read_state_dict"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage type name -> numpy dtype (byte order applied later)
_STORAGE_DTYPES: Dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class LegacyFormatError(ValueError):
    """The file is not a PyTorch legacy state dict this reader can decode."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    view: Optional[Tuple[str, int, int]]  # (view_key, offset, size) in very old files


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, storage_offset: int, size, stride) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise LegacyFormatError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _NoGlobalsUnpickler(pickle.Unpickler):
    """For the header pickles and the key list: plain data only."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights file")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("unexpected persistent id in a weights file header")


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, byteorder: str):
        super().__init__(file)
        self._byteorder = byteorder
        self.storages: Dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only tensor state dicts are supported"
            ) from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        ref = _StorageRef(
            key=str(key),
            dtype=np.dtype(self._byteorder + _STORAGE_DTYPES[storage_type.name]),
            numel=int(numel),
            view=tuple(view) if view is not None else None,
        )
        known = self.storages.setdefault(ref.key, ref)
        if view is not None:
            # very old files: the view shares the root storage, addressed by its own key
            return _StorageRef(ref.key, known.dtype, int(view[2]), (str(view[0]), int(view[1]), int(view[2])))
        return known


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise LegacyFormatError(f"file ends early while reading {what} ({len(data)} of {n} bytes)")
    return data


def read_state_dict(f: BinaryIO) -> Dict[str, np.ndarray]:
    """Read a legacy ``.pth`` from a seekable binary stream; return ``{name: array}`` in file order."""
    head = f.read(2)
    if head == b"PK":
        raise LegacyFormatError(
            "this is a zip-format (PyTorch >= 1.6) checkpoint; only the legacy format is supported"
        )
    f.seek(-len(head), io.SEEK_CUR)
    try:
        magic = _NoGlobalsUnpickler(f).load()
        if magic != MAGIC_NUMBER:
            raise LegacyFormatError("not a PyTorch legacy checkpoint (wrong magic number)")
        version = _NoGlobalsUnpickler(f).load()
        if version != PROTOCOL_VERSION:
            raise LegacyFormatError(f"unsupported PyTorch legacy protocol version {version!r}")
        sys_info = _NoGlobalsUnpickler(f).load()
    except LegacyFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything here means "not our format"
        raise LegacyFormatError(f"not a PyTorch legacy checkpoint ({exc})") from exc
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    byteorder = "<" if little else ">"

    unpickler = _StateDictUnpickler(f, byteorder)
    try:
        obj = unpickler.load()
        keys: List[str] = [str(k) for k in _NoGlobalsUnpickler(f).load()]
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise LegacyFormatError(f"cannot decode the state dict: {exc}") from exc

    buffers: Dict[str, np.ndarray] = {}
    for key in keys:
        ref = unpickler.storages.get(key)
        if ref is None:
            raise LegacyFormatError(f"storage {key} has bytes but no tensor refers to it")
        (count,) = struct.unpack(byteorder + "q", _read_exact(f, 8, f"size of storage {key}"))
        raw = _read_exact(f, count * ref.dtype.itemsize, f"storage {key}")
        buffers[key] = np.frombuffer(raw, dtype=ref.dtype)

    tensors = _flatten(obj, "")
    out: Dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        out[name] = _materialize(t, buffers)
    return out


def load_state_dict(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """Read the legacy PyTorch checkpoint at ``path`` into native-endian numpy arrays."""
    with open(path, "rb") as fh:
        return read_state_dict(fh)


def _flatten(obj: Any, prefix: str) -> Dict[str, _TensorRef]:
    if isinstance(obj, _TensorRef):
        return {prefix: obj}
    if isinstance(obj, dict):
        out: Dict[str, _TensorRef] = {}
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            out.update(_flatten(v, name))
        return out
    return {}  # plain metadata values (e.g. version numbers) carry no weights


def _materialize(t: _TensorRef, buffers: Dict[str, np.ndarray]) -> np.ndarray:
    ref = t.storage
    base = buffers.get(ref.key)
    if base is None:
        raise LegacyFormatError(f"tensor refers to storage {ref.key} whose bytes are missing")
    if ref.view is not None:
        _, view_offset, view_size = ref.view
        base = base[view_offset : view_offset + view_size]
    if not t.size:
        return np.array(base[t.offset], dtype=base.dtype.newbyteorder("="))
    extent = t.offset + 1 + sum((s - 1) * st for s, st in zip(t.size, t.stride) if s > 0)
    if any(s == 0 for s in t.size):
        return np.zeros(t.size, dtype=base.dtype.newbyteorder("="))
    if extent > base.size:
        raise LegacyFormatError(f"tensor of shape {t.size} overruns its storage {ref.key}")
    item = base.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[t.offset :], shape=t.size, strides=tuple(s * item for s in t.stride), writeable=False
    )
    return np.ascontiguousarray(view).astype(base.dtype.newbyteorder("="), copy=False)
