"""Inference engines for serving: ONNX Runtime on a proven export, or Keras as the fallback.

The web process serves with `OnnxPredictor`, which needs only onnxruntime and NumPy; `load_predictor`
imports Keras (and so TensorFlow) only when a model is to be served by Keras. Both take the uint8
images `images.load_image` makes and give float64 probabilities of shape (batch, labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ONNXRUNTIME = "onnxruntime"
KERAS = "keras"
ENGINES = (ONNXRUNTIME, KERAS)
# The names the ONNX export gives its input and output (ml.export).
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# Images per ONNX Runtime call. A convolutional model on a CPU costs the same per image whatever the
# batch (measured: 0.43 ms per 64×64 image at 1 and at 32), while the memory ONNX Runtime keeps for
# activations grows with it: big batches run in chunks, so a worker's memory stays that of 8 images.
CHUNK = 8


class OnnxPredictor:
    """An ONNX export loaded in ONNX Runtime, ready to classify batches of preprocessed uint8 images."""

    engine = ONNXRUNTIME

    def __init__(self, model_path: str | Path, *, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One request's batch runs in the request's own thread (threads=1): the server's worker
        # processes, not a thread pool per session, share out the cores. 0 is ONNX Runtime's default.
        options.intra_op_num_threads = max(0, int(threads or 0))
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Batch sizes vary from request to request: no memory plan kept per input shape.
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            names = ", ".join(entry.name for entry in inputs)
            raise ValueError(f"the ONNX model must have one input named '{INPUT_NAME}', not: {names}")
        self.input_shape = tuple(int(side) for side in inputs[0].shape[1:])
        self.warm_up()

    def warm_up(self) -> None:
        """Run one image through, so the first real request does not pay for ONNX Runtime's first run."""
        self.predict(np.zeros((1, *self.input_shape), dtype=np.uint8))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of shape (batch, num_classes) for uint8 images of the model's input shape."""
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images have shape {images.shape[1:]}, the model takes {self.input_shape}")
        images = images.astype(np.float32, copy=False)
        # InferenceSession.run is safe from several threads at once, and releases the GIL.
        outputs = [
            self.session.run([OUTPUT_NAME], {INPUT_NAME: images[start : start + CHUNK]})[0]
            for start in range(0, len(images), CHUNK)
        ]
        return np.asarray(np.concatenate(outputs) if len(outputs) > 1 else outputs[0], dtype=np.float64)


def load_predictor(engine: str, model_path: str | Path, *, threads: int | None = None):
    """The predictor of `engine` for the model file: an ONNX export, or a .keras file for Keras."""
    if engine == ONNXRUNTIME:
        return OnnxPredictor(model_path, threads=threads)
    if engine == KERAS:
        from ml.inference import Predictor

        return Predictor(model_path, threads=threads)
    raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
