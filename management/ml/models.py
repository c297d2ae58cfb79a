"""Build a Keras model from a dataset's model code.

The code (the original KerasUI contract) adds layers to `model`, a `Sequential` that already holds
the input and a rescaling to 0..1; KerasUI then appends the softmax layer and compiles.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

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


class ModelCodeError(ValueError):
    """The model code could not be run or produced an unusable model."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model, copied from a training run."""

    code: str
    image_size: int
    channels: int
    num_classes: int
    learning_rate: float = 0.001


def _line_of(error: BaseException) -> int | None:
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == CODE_FILENAME:
            return frame.lineno
    return None


def _describe(error: BaseException) -> str:
    line = _line_of(error)
    where = f"line {line}: " if line else ""
    return f"{where}{type(error).__name__}: {error}"


def build_model(spec: ModelSpec):
    """Return a compiled model, or raise ModelCodeError naming the line that went wrong."""
    import keras
    from keras import layers

    if spec.num_classes < 2:
        raise ValueError("a classifier needs at least two labels")
    try:
        compiled = compile(spec.code, CODE_FILENAME, "exec")
    except SyntaxError as error:
        raise ModelCodeError(f"line {error.lineno}: SyntaxError: {error.msg}") from None

    model = keras.Sequential(name="kerasui")
    model.add(keras.Input(shape=(spec.image_size, spec.image_size, spec.channels)))
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
    except Exception as error:  # noqa: BLE001 - any error in user code becomes a readable message
        raise ModelCodeError(_describe(error)) from None

    if namespace["model"] is not model:
        raise ModelCodeError("the code must add layers to `model`, not replace it")
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


def model_summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
