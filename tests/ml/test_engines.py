"""ONNX Runtime, the serving engine, answers as Keras does, for one image and batches, for every
starting point whose ONNX export passes its check."""

import subprocess
import sys

import numpy as np
import pytest

from ml.child import PROJECT_ROOT
from ml.engines import KERAS, ONNXRUNTIME, OnnxPredictor, load_predictor
from ml.export import export_model
from ml.models import DEFAULT_PROCESS, Augmentation, ModelSpec, build_model

SERVING_TOLERANCE = 1e-5


def images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _agree(onnx: OnnxPredictor, keras_predictor) -> float:
    """The largest difference of a probability between the two engines over one image and batches."""
    size = onnx.input_shape[0]
    worst = 0.0
    for count in (1, 7, 32):
        batch = images(count, size, seed=count)
        answers = onnx.predict(batch)
        assert answers.shape == (count, keras_predictor.predict(batch[:1]).shape[1])
        worst = max(worst, float(np.abs(answers - keras_predictor.predict(batch)).max()))
    return worst


def test_onnx_runtime_answers_as_keras_for_the_default_code_one_image_and_batches(colour_model_file):
    onnx = load_predictor(ONNXRUNTIME, colour_model_file.with_suffix(".onnx"), threads=1)
    keras_predictor = load_predictor(KERAS, colour_model_file, threads=1)
    assert onnx.engine == ONNXRUNTIME and onnx.input_shape == (16, 16, 3)
    assert _agree(onnx, keras_predictor) <= SERVING_TOLERANCE


STARTING_POINTS = {
    "code": {"size": 16},
    "deep_cnn with augmentation": {
        "size": 16,
        "architecture": "deep_cnn",
        "augmentation": Augmentation(flip="horizontal", rotation=0.1, zoom=0.1, contrast=0.2, seed=1),
    },
    "mobilenet_v3_small": {"size": 32, "architecture": "mobilenet_v3_small"},
    "efficientnet_b0": {"size": 32, "architecture": "efficientnet_b0"},
}
# tf2onnx leaves EfficientNet-B0's Normalization constants as graph inputs: its export is refused,
# and such a model is served by Keras (tests/services/test_serving.py).
REFUSED = {"efficientnet_b0"}


@pytest.mark.parametrize("name", STARTING_POINTS)
def test_each_starting_point_that_exports_is_answered_alike_by_onnx_runtime_and_keras(tmp_path, name):
    options = dict(STARTING_POINTS[name])
    size = options.pop("size")
    model = build_model(ModelSpec(code=DEFAULT_PROCESS, image_size=size, channels=3, num_classes=3, **options))
    # One epoch moves batch normalisation's statistics away from their initial values.
    model.fit(images(12, size).astype(np.float32), np.arange(12) % 3, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    report = export_model(path, format="onnx", target=tmp_path / "model.onnx", images=images(6, size, seed=9))
    if name in REFUSED:
        assert not report.ok and report.error
        return
    assert report.ok, report.error
    onnx = OnnxPredictor(tmp_path / "model.onnx", threads=1)
    assert _agree(onnx, load_predictor(KERAS, path, threads=1)) <= SERVING_TOLERANCE


def test_the_onnx_engine_never_imports_tensorflow(colour_model_file):
    code = (
        "import sys, numpy as np\n"
        "from ml.engines import load_predictor\n"
        "from ml.images import load_image\n"
        f"p = load_predictor('onnxruntime', {str(colour_model_file.with_suffix('.onnx'))!r}, threads=1)\n"
        "p.predict(np.zeros((2, 16, 16, 3), np.uint8))\n"
        "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"


def test_images_of_the_wrong_shape_are_refused_by_the_onnx_engine(colour_model_file):
    onnx = OnnxPredictor(colour_model_file.with_suffix(".onnx"))
    with pytest.raises(ValueError, match=r"the model takes \(16, 16, 3\)"):
        onnx.predict(images(1, 8))


def test_an_unknown_engine_is_refused(colour_model_file):
    with pytest.raises(ValueError, match="unknown engine"):
        load_predictor("torch", colour_model_file)
