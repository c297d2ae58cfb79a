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

_threads_configured = False


def configure_threads(threads: int | None) -> None:
    """Give TensorFlow's CPU thread pools `threads` threads, once, before TensorFlow starts.

    A web process serves one small batch at a time: with one thread the model runs in the request's
    own thread instead of waking a pool (measured: about 2 ms less per prediction on 2 cores), and
    the server's worker processes, not TensorFlow, spread the load over the cores. None leaves
    TensorFlow's default (all cores). Too late once TensorFlow has run an operation: then ignored.
    """
    global _threads_configured
    if _threads_configured or not threads:
        return
    _threads_configured = True
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        log.info("TensorFlow already started: its thread pools keep their size")


class Predictor:
    """A loaded model ready to classify batches of preprocessed uint8 images."""

    def __init__(self, model_path: str | Path, *, threads: int | None = None):
        configure_threads(threads)
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
