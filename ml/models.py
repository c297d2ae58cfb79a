"""Build a Keras model from a training run's choices: a starting point, augmentation and optimiser.

The "code" starting point is the original KerasUI contract: the model code adds layers to `model`, a
`Sequential` that already holds the input and a rescaling to 0..1. The other starting points are
built here in Python. KerasUI then appends the softmax layer and compiles. Every model takes images
with values 0..255 and carries its own preprocessing, so a saved model needs nothing extra.
"""

from __future__ import annotations

import math
import os
import re
import traceback
import warnings
from dataclasses import asdict, dataclass, field

from ml.backbones import BACKBONES
from ml.backbones import MIN_IMAGE_SIZE as PRETRAINED_MIN_IMAGE_SIZE

CODE_FILENAME = "<model code>"

DEFAULT_PROCESS = """\
# Add layers to `model`: the input (scaled to 0..1) is already there, and KerasUI adds the
# final Dense(num_classes, activation="softmax") after your layers.
# In scope: model, keras, layers, every keras.layers name (Conv2D, Dense, ...),
# image_size, channels and num_classes.

# Convolution blocks halve the image until it is about 4 px wide, so the same code suits
# any size from 16 to 512 px and always ends on a small map of features.
filters = 32
size = image_size
while size > 4:
    model.add(Conv2D(filters, 3, padding="same", activation="relu"))
    model.add(MaxPooling2D())
    size //= 2
    filters = min(filters * 2, 128)
model.add(Flatten())
model.add(Dropout(0.3))
model.add(Dense(128, activation="relu"))
"""


ARCHITECTURES = {
    "code": "Model code (the default code is a small CNN)",
    "deep_cnn": "Deeper CNN with batch normalisation",
    "mobilenet_v3_small": "MobileNetV3-Small, from scratch",
    "efficientnet_b0": "EfficientNet-B0, from scratch",
}
# The smallest image each starting point accepts: the applications refuse anything under 32 px, and
# below 8 px the deeper CNN would have no convolution block left.
MIN_IMAGE_SIZE = {"code": 1, "deep_cnn": 8, "mobilenet_v3_small": 32, "efficientnet_b0": 32}
# Pretrained starting points (ml/backbones.py): they train by the transfer recipe of ml/transfer.py.
ARCHITECTURES.update({name: backbone.label for name, backbone in BACKBONES.items()})
MIN_IMAGE_SIZE.update(dict.fromkeys(BACKBONES, PRETRAINED_MIN_IMAGE_SIZE))
# "auto" (the trainer's choice among candidates) is checked and built as the model code, its scratch candidate.
AUTOMATIC = "auto"
ARCHITECTURES[AUTOMATIC] = "Automatic (checked as the model code, one of its candidates)"
MIN_IMAGE_SIZE[AUTOMATIC] = MIN_IMAGE_SIZE["code"]
PRETRAINED = tuple(BACKBONES)
APPLICATIONS = ("mobilenet_v3_small", "efficientnet_b0")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
# Keras tells a weights file's format by its name; anything else it refuses.
WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")


class ModelCodeError(ValueError):
    """The model code could not be run or produced an unusable model."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


def _check_fraction(name: str, value: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ValueError(f"augmentation {name} must be a number from 0 to {high}, not {value!r}")


@dataclass(frozen=True)
class Augmentation:
    """Random changes to training images; Keras applies them only while training."""

    flip: str = "none"
    rotation: float = 0.0  # fraction of a full turn either way (RandomRotation factor), 0 = off
    zoom: float = 0.0  # RandomZoom height/width factor, 0 = off
    contrast: float = 0.0  # RandomContrast factor, 0 = off
    seed: int | None = None  # None: the layers draw a seed from Python's `random` when built

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise ValueError(f"augmentation flip must be one of {', '.join(FLIPS)}, not {self.flip!r}")
        _check_fraction("rotation", self.rotation, 0.5)
        _check_fraction("zoom", self.zoom, 0.9)
        _check_fraction("contrast", self.contrast, 1.0)

    @property
    def active(self) -> bool:
        return self.flip != "none" or self.rotation > 0 or self.zoom > 0 or self.contrast > 0


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model, copied from a training run."""

    code: str
    image_size: int
    channels: int
    num_classes: int
    learning_rate: float = 0.001
    architecture: str = "code"
    augmentation: Augmentation = field(default_factory=Augmentation)
    weights_path: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """The inverse of `as_dict` (for example after a trip through JSON)."""
        values = dict(data)
        values["augmentation"] = Augmentation(**(values.get("augmentation") or {}))
        return cls(**values)


def check_spec(spec: ModelSpec) -> None:
    """Raise ValueError with a message for the user when the spec cannot give a model.

    Cheap and without Keras, so a web form can call it; `build_model` calls it too.
    """
    if spec.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {spec.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    label = ARCHITECTURES[spec.architecture].split(",")[0]
    if spec.num_classes < 2:
        raise ValueError("a classifier needs at least two labels")
    if spec.channels < 1:
        raise ValueError(f"images need at least one channel, not {spec.channels}")
    minimum = MIN_IMAGE_SIZE[spec.architecture]
    if spec.image_size < minimum:
        raise ValueError(
            f"{label} needs images of at least {minimum}×{minimum} px; "
            f"this image size is {spec.image_size}×{spec.image_size}"
        )
    rate = spec.learning_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 < rate <= 1 and math.isfinite(rate)):
        raise ValueError(f"learning_rate must be a number above 0 and at most 1, not {rate!r}")
    if spec.weights_path:
        if spec.architecture not in APPLICATIONS:
            raise ValueError(f"a weights file can only start {', '.join(APPLICATIONS)}, not {spec.architecture}")
        if not str(spec.weights_path).endswith(WEIGHTS_SUFFIXES):
            raise ValueError(f"the weights file must end in {', '.join(WEIGHTS_SUFFIXES)}")
        if not os.path.isfile(spec.weights_path):
            raise ValueError(f"the weights file {os.path.basename(spec.weights_path)} does not exist")


def _line_of(error: BaseException) -> int | None:
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == CODE_FILENAME:
            return frame.lineno
    return None


def _describe(error: BaseException, line: int | None) -> str:
    where = f"line {line}: " if line else ""
    return f"{where}{type(error).__name__}: {error}"


def augmentation_layers(augmentation: Augmentation):
    """A `Sequential` of the random layers, or None when augmentation is off."""
    import keras
    from keras import layers

    if not augmentation.active:
        return None

    def seed(offset: int) -> int | None:
        # Each layer gets its own seed, so a flip and a rotation do not draw the same numbers.
        return None if augmentation.seed is None else augmentation.seed + offset

    random_layers = []
    if augmentation.flip != "none":
        random_layers.append(layers.RandomFlip(augmentation.flip, seed=seed(0)))
    if augmentation.rotation > 0:
        random_layers.append(layers.RandomRotation(augmentation.rotation, seed=seed(1)))
    if augmentation.zoom > 0:
        random_layers.append(layers.RandomZoom(augmentation.zoom, augmentation.zoom, seed=seed(2)))
    if augmentation.contrast > 0:
        # Placed before any rescaling, so the images are still 0..255, the layer's default range.
        random_layers.append(layers.RandomContrast(augmentation.contrast, value_range=(0, 255), seed=seed(3)))
    return keras.Sequential(random_layers, name="augmentation")


def _add_code_layers(model, spec: ModelSpec) -> None:
    import keras
    from keras import layers

    try:
        compiled = compile(spec.code, CODE_FILENAME, "exec")
    except SyntaxError as error:
        raise ModelCodeError(f"line {error.lineno}: SyntaxError: {error.msg}", line=error.lineno) from None

    model.add(layers.Rescaling(1.0 / 255))
    namespace = {name: getattr(layers, name) for name in dir(layers) if not name.startswith("_")}
    namespace.update(
        model=model,
        keras=keras,
        layers=layers,
        image_size=spec.image_size,
        channels=spec.channels,
        num_classes=spec.num_classes,
    )
    try:
        exec(compiled, namespace)  # noqa: S102 - running the user's model code is the product
    except (Exception, SystemExit) as error:  # noqa: BLE001 - any error in user code becomes a readable message
        line = _line_of(error)
        raise ModelCodeError(_describe(error, line), line=line) from None
    if namespace["model"] is not model:
        raise ModelCodeError("the code must add layers to `model`, not replace it")


def _add_deep_cnn_layers(model, spec: ModelSpec) -> None:
    from keras import layers

    model.add(layers.Rescaling(1.0 / 255))
    filters = 32
    size = spec.image_size
    while size > 4:
        for _ in range(2):
            # No bias: the batch normalisation that follows has its own offset.
            model.add(layers.Conv2D(filters, 3, padding="same", use_bias=False))
            model.add(layers.BatchNormalization())
            model.add(layers.Activation("relu"))
        model.add(layers.MaxPooling2D())
        size //= 2
        filters = min(filters * 2, 256)
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dropout(0.3))


def _application(spec: ModelSpec):
    """The backbone without its top, from scratch or with the weights of the user's file."""
    import keras

    input_shape = (spec.image_size, spec.image_size, spec.channels)
    # Both rescale 0..255 inputs themselves: MobileNetV3 to -1..1, EfficientNet to 0..1 and then
    # through a Normalization layer (identity from scratch, the file's mean and variance otherwise).
    if spec.architecture == "mobilenet_v3_small":
        backbone = keras.applications.MobileNetV3Small(
            input_shape=input_shape, include_top=False, weights=None, pooling="avg", include_preprocessing=True
        )
    else:
        backbone = keras.applications.EfficientNetB0(
            input_shape=input_shape, include_top=False, weights=None, pooling="avg"
        )
    if spec.weights_path:
        # Loaded here rather than through `weights=`, so a file that does not fit is told apart
        # from every other error of the constructor.
        try:
            with warnings.catch_warnings():
                # Keras warns once per nested block of a file that does not fit; the error says it all.
                warnings.simplefilter("ignore")
                backbone.load_weights(spec.weights_path)
        except Exception as error:  # noqa: BLE001 - any unreadable or mismatched file is the user's to fix
            hint = (
                " (weights learnt on rgb images, like ImageNet's, need the rgb colour mode)"
                if spec.channels != 3
                else ""
            )
            raise ValueError(
                f"the weights file does not fit {spec.architecture} at "
                f"{spec.image_size}×{spec.image_size}×{spec.channels}{hint}: {_weights_problem(error)}"
            ) from None
    return backbone


def _pretrained_architecture(spec: ModelSpec):
    """A pretrained starting point's backbone without its weights, at the run's size and channels."""
    import keras

    from ml.efficientnet_lite import build_efficientnet_lite0

    size = spec.image_size
    if spec.architecture == "efficientnet_lite0":
        backbone = build_efficientnet_lite0(image_size=size)
    else:
        constructor = {
            "mobilenet_v3_small_imagenet": "MobileNetV3Small",
            "mobilenet_v3_large_imagenet": "MobileNetV3Large",
            "efficientnet_b0_imagenet": "EfficientNetB0",
        }[spec.architecture]
        backbone = getattr(keras.applications, constructor)(
            input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg"
        )
    if spec.channels == 3:
        return backbone
    inputs = keras.Input(shape=(size, size, spec.channels))
    rgb = keras.layers.Concatenate(name="grey_to_rgb")([inputs] * 3)
    return keras.Model(inputs, backbone(rgb), name=backbone.name)


def _weights_problem(error: BaseException) -> str:
    """Keras' loading error in one line: its messages run to pages of printed weight values."""
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    layer = re.search(r"error message for object <\w+ name=([^,>]+)", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if shapes:
        name = f"layer {layer[1]}" if layer else "a layer"
        detail = f"{name} needs weights of shape {shapes[1]}, the file has {shapes[2]}"
    elif count and len(lines) > 1:
        detail = lines[1]
    else:
        detail = lines[0]
    if count and int(count[1]) > 1:
        detail = f"{count[1]} layers do not match, for example: {detail}"
    return detail[:300]


def build_model(spec: ModelSpec):
    """Return a compiled model, or raise ModelCodeError naming the line that went wrong.

    A spec that cannot give a model (size, architecture, weights file) raises ValueError.
    """
    import keras
    from keras import layers

    check_spec(spec)
    model = keras.Sequential(name="kerasui")
    model.add(keras.Input(shape=(spec.image_size, spec.image_size, spec.channels)))
    augmentation = augmentation_layers(spec.augmentation)
    if augmentation is not None:
        model.add(augmentation)

    if spec.architecture in ("code", AUTOMATIC):
        _add_code_layers(model, spec)
    elif spec.architecture == "deep_cnn":
        _add_deep_cnn_layers(model, spec)
    elif spec.architecture in PRETRAINED:
        # Its layers, to be checked and shown; training builds it with its weights (ml/transfer.py).
        model.add(_pretrained_architecture(spec))
        model.add(layers.Dropout(0.2))
    else:
        model.add(_application(spec))
        model.add(layers.Dropout(0.2))

    try:
        if len(model.output_shape) != 2:
            model.add(layers.Flatten())
        model.add(layers.Dense(spec.num_classes, activation="softmax", name="predictions"))
    except Exception as error:  # noqa: BLE001 - shape errors surface here, e.g. too much pooling
        raise ModelCodeError(f"the layers do not fit together: {error}") from None
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def model_layers(model) -> list[dict]:
    """Name, type, output shape (None for the batch) and parameter count of each top-level layer."""
    rows = []
    for layer in model.layers:
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": _shape_list(layer.output),
                "params": int(layer.count_params()),
            }
        )
    return rows


def _shape_list(output) -> list:
    if isinstance(output, (list, tuple)):
        return [_shape_list(item) for item in output]
    return [None if size is None else int(size) for size in output.shape]


def parameter_counts(model) -> dict:
    """The model's parameters: total, trainable and non-trainable (batch normalisation statistics)."""
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    non_trainable = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)
    return {"total": int(trainable + non_trainable), "trainable": int(trainable), "non_trainable": int(non_trainable)}


def model_summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
