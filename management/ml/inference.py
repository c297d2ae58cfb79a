"""Load a trained model once and turn preprocessed images into probabilities.

The model is called through a `tf.function` traced once for any batch size (about 5× cheaper per
call than an eager `model(x)`, and far cheaper than `model.predict()`, which builds a dataset and a
loop on every call). If tracing fails, the eager call is the fallback; `engine` says which is used.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

COMPILED = "tf.function"
EAGER = "keras"


class Predictor:
    """A loaded model ready to classify batches of preprocessed uint8 images."""

    def __init__(self, model_path: str | Path):
        import keras

        # safe_mode refuses serialized Python code (Lambda layers): the web process never runs
        # code coming from a model file.
        self.model = keras.saving.load_model(str(model_path), compile=False, safe_mode=True)
        self._to_numpy = keras.ops.convert_to_numpy
        self._lock = threading.Lock()
        self.input_shape = tuple(self.model.input_shape[1:])
        self.engine = EAGER
        self._call = self._eager
        try:
            self._call = self._compile()
            self.engine = COMPILED
            self.warm_up()
        except Exception as error:  # noqa: BLE001 - any tracing failure means: use the eager call
            log.warning("prediction falls back to eager Keras calls for %s: %s", model_path, error)
            self._call = self._eager
            self.engine = EAGER
            self.warm_up()

    def _compile(self):
        import tensorflow as tf

        signature = [tf.TensorSpec((None, *self.input_shape), tf.float32)]
        return tf.function(lambda batch: self.model(batch, training=False), input_signature=signature)

    def _eager(self, batch):
        # Eager calls of one model from several threads at once are not safe while it builds.
        with self._lock:
            return self.model(batch, training=False)

    def warm_up(self) -> None:
        """Run one image through, so the first real request does not pay for tracing."""
        self.predict(np.zeros((1, *self.input_shape), dtype=np.uint8))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of shape (batch, num_classes) for uint8 images of the model's input shape."""
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images have shape {images.shape[1:]}, the model takes {self.input_shape}")
        output = self._call(images.astype(np.float32, copy=False))
        return np.asarray(self._to_numpy(output), dtype=np.float64)
