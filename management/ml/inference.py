"""Load a trained model once and turn preprocessed images into probabilities.

A direct, compiled call of the model costs a fraction of `model.predict()` per request, so the
loaded model is wrapped once and reused.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


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
        self.warm_up()

    def warm_up(self) -> None:
        self.predict(np.zeros((1, *self.input_shape), dtype=np.uint8))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of shape (batch, num_classes) for uint8 images of the model's input shape."""
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images have shape {images.shape[1:]}, the model takes {self.input_shape}")
        batch = images.astype(np.float32, copy=False)
        # TensorFlow runs one call at a time per model well; a lock keeps concurrent requests
        # from stepping on each other's graph tracing.
        with self._lock:
            output = self.model(batch, training=False)
        return np.asarray(self._to_numpy(output), dtype=np.float64)
