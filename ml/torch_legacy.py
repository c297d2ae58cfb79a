"""Read tensors from a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format, without PyTorch.

A pickle can name any Python callable and call it while loading, so this reader's unpickler admits
exactly the names a state dict of tensors needs (the tensor rebuilder, storage types, OrderedDict)
and refuses every other one before anything is called: a weights file must never run code.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# The storage classes of torch's legacy format and the numpy types of their elements (little-endian).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a legacy PyTorch checkpoint of tensors this reader can read."""


class ForbiddenGlobal(CheckpointError):
    """The file's pickle names a Python object other than the few a tensor file needs."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _View:
    storage: _Storage
    offset: int  # in elements of the root storage
    numel: int


@dataclass(frozen=True)
class _LazyTensor:
    """A tensor whose storage's bytes come after the pickle, so it is materialised at the end."""

    source: _Storage | _View
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (_Storage, _View)):
        raise CheckpointError("a tensor must be built from a storage of the file")
    size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if len(size) != len(stride) or any(n < 0 for n in size + stride) or int(storage_offset) < 0:
        raise CheckpointError(f"a tensor has an impossible shape {size} / stride {stride}")
    return _LazyTensor(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _LazyTensor):
        raise CheckpointError("a parameter must wrap a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allowed names; `storages` collects the storages the pickle refers to."""

    def __init__(self, file: BinaryIO, *, tensors: bool):
        super().__init__(file)
        self.tensors = tensors
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if self.tensors:
            if (module, name) in _ALLOWED:
                return _ALLOWED[(module, name)]
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(name)
        raise ForbiddenGlobal(
            f"the weights file refers to {module}.{name}, which a file of tensors never needs: refused "
            "(a weights file must not run code)"
        )

    def persistent_load(self, pid):
        if not self.tensors or not isinstance(pid, tuple) or not pid or pid[0] != "storage" or len(pid) != 6:
            raise CheckpointError(f"unexpected persistent id in the weights file: {str(pid)[:80]}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise CheckpointError("a storage of the weights file is malformed")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        if view is None:
            return storage
        _view_key, offset, view_size = view
        return _View(storage, int(offset), int(view_size))


def _load_plain(file: BinaryIO):
    """A header pickle: plain data only, no name of any kind admitted."""
    return _RestrictedUnpickler(file, tensors=False).load()


def _materialise(tensor: _LazyTensor) -> np.ndarray:
    source = tensor.source
    storage = source.storage if isinstance(source, _View) else source
    base = 0
    limit = storage.numel
    if isinstance(source, _View):
        base, limit = source.offset, source.offset + source.numel
    start = base + tensor.offset
    if tensor.size and min(tensor.size) == 0:
        return np.zeros(tensor.size, dtype=storage.dtype)
    last = start + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if last >= limit or storage.data is None:
        raise CheckpointError(f"a tensor of shape {tensor.size} reaches past its storage")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.data[start:],
        shape=tensor.size,
        strides=tuple(s * itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="), copy=True)


def _replace_tensors(value):
    if isinstance(value, _LazyTensor):
        return _materialise(value)
    if isinstance(value, collections.OrderedDict):
        return collections.OrderedDict((key, _replace_tensors(item)) for key, item in value.items())
    if isinstance(value, dict):
        return {key: _replace_tensors(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_tensors(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_replace_tensors(item) for item in value)
    return value


def load_legacy_checkpoint(path: str | os.PathLike) -> dict:
    """The object saved in a legacy PyTorch file, with every tensor as a numpy array.

    Raises ForbiddenGlobal, before calling anything, when the file names an object other than the
    tensor rebuilders, storage types and OrderedDict; CheckpointError when it is not such a file.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as file:
        try:
            if _load_plain(file) != MAGIC_NUMBER:
                raise CheckpointError(f"{path.name} is not a legacy PyTorch checkpoint (no magic number)")
            if _load_plain(file) != PROTOCOL_VERSION:
                raise CheckpointError(f"{path.name} has an unknown PyTorch protocol version")
            info = _load_plain(file)
            if not isinstance(info, dict) or not info.get("little_endian", False):
                raise CheckpointError(f"{path.name} was saved on a big-endian machine; not supported")
            unpickler = _RestrictedUnpickler(file, tensors=True)
            result = unpickler.load()
            keys = _load_plain(file)
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, ValueError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{path.name} is not a readable legacy PyTorch checkpoint: {error}") from None
        if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
            raise CheckpointError(f"{path.name} lists storages that its tensors do not use")
        for key in keys:
            storage = unpickler.storages[key]
            header = file.read(8)
            if len(header) != 8:
                raise CheckpointError(f"{path.name} ends before the data of storage {key}")
            (numel,) = struct.unpack("<q", header)
            nbytes = numel * storage.dtype.itemsize
            if numel != storage.numel or nbytes > size - file.tell():
                raise CheckpointError(f"storage {key} of {path.name} has {numel} elements, not {storage.numel}")
            storage.data = np.frombuffer(file.read(nbytes), dtype=storage.dtype)
    return _replace_tensors(result)
