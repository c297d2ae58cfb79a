"""Every export format loads in its own runtime and answers as the Keras model does."""

import zipfile

import keras
import numpy as np
import pytest

from ml.export import (
    FORMATS,
    export_in_child,
    export_model,
    inference_model,
    inspect_in_child,
    inspect_model,
)
from ml.models import DEFAULT_PROCESS, Augmentation, ModelSpec, build_model

SIZE = 16


def _trained(tmp_path, **options):
    """A model of `options` fitted for one epoch (so batch normalisation statistics move), saved."""
    spec = ModelSpec(code=DEFAULT_PROCESS, image_size=SIZE, channels=3, num_classes=3, **options)
    model = build_model(spec)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, SIZE, SIZE, 3)).astype(np.float32)
    model.fit(images, np.arange(12) % 3, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    return path, rng.integers(0, 256, (6, SIZE, SIZE, 3)).astype(np.uint8)


AUGMENTED_BATCHNORM = {
    "architecture": "deep_cnn",
    "augmentation": Augmentation(flip="horizontal", rotation=0.1, zoom=0.1, contrast=0.2, seed=1),
}


@pytest.fixture(scope="module")
def code_model(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("code"))


@pytest.fixture(scope="module")
def augmented_model(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("deep"), **AUGMENTED_BATCHNORM)


@pytest.mark.parametrize("format", [f for f in FORMATS if f != "keras"])
def test_each_format_of_the_default_model_answers_as_keras_does(code_model, tmp_path, format):
    path, images = code_model
    target = tmp_path / f"export.{format}"
    report = export_model(path, format=format, target=target, images=images, metadata={"labels": ["a", "b", "c"]})
    assert report.ok, report.error
    assert report.max_difference <= 1e-4
    assert report.size == target.stat().st_size > 0
    assert report.samples == 6


@pytest.mark.parametrize("format", ["h5", "savedmodel", "tflite", "onnx"])
def test_a_model_with_augmentation_and_batch_normalisation_exports_its_inference_function(
    augmented_model, tmp_path, format
):
    path, images = augmented_model
    report = export_model(path, format=format, target=tmp_path / f"export.{format}", images=images)
    assert report.ok, report.error
    assert report.max_difference <= 1e-4


def test_float16_tflite_is_checked_against_its_own_tolerance(code_model, tmp_path):
    path, images = code_model
    report = export_model(path, format="tflite", precision="float16", target=tmp_path / "m.tflite", images=images)
    assert report.ok, report.error
    assert report.tolerance == 1e-3
    assert report.max_difference <= 1e-3


def test_the_inference_model_leaves_out_the_augmentation(augmented_model):
    path, _ = augmented_model
    model = keras.saving.load_model(path, compile=False)
    assert "augmentation" in [layer.name for layer in model.layers]
    assert "augmentation" not in [layer.name for layer in inference_model(model).layers]


def test_onnx_carries_labels_and_preprocessing_in_its_metadata(code_model, tmp_path):
    import onnxruntime

    path, images = code_model
    target = tmp_path / "m.onnx"
    metadata = {"labels": ["a", "b", "c"], "image_size": SIZE, "color_mode": "rgb"}
    assert export_model(path, format="onnx", target=target, images=images, metadata=metadata).ok
    custom = onnxruntime.InferenceSession(str(target)).get_modelmeta().custom_metadata_map
    assert custom["labels"] == '["a", "b", "c"]'
    assert custom["color_mode"] == "rgb"


def test_the_savedmodel_zip_has_a_serving_default_signature_and_the_metadata(code_model, tmp_path):
    import tensorflow as tf

    path, images = code_model
    target = tmp_path / "sm.zip"
    assert export_model(path, format="savedmodel", target=target, images=images, metadata={"labels": ["a"]}).ok
    with zipfile.ZipFile(target) as archive:
        archive.extractall(tmp_path / "out")
        assert "saved_model/assets.extra/kerasui.json" in archive.namelist()
    loaded = tf.saved_model.load(str(tmp_path / "out" / "saved_model"))
    assert "serving_default" in loaded.signatures


def test_an_export_outside_the_tolerance_is_refused(code_model, tmp_path, monkeypatch):
    from ml import export

    path, images = code_model
    original = export.run_export
    monkeypatch.setattr(export, "run_export", lambda *args: original(*args) + 0.01)
    report = export_model(path, format="onnx", target=tmp_path / "m.onnx", images=images)
    assert not report.ok
    assert "differs from the Keras model by up to 0.01" in report.error
    assert "not served" in report.error


def test_an_unknown_format_is_refused(code_model, tmp_path):
    path, images = code_model
    report = export_model(path, format="pickle", target=tmp_path / "m", images=images)
    assert not report.ok and "unknown format" in report.error


def test_export_in_a_child_process_reports_back(code_model, tmp_path):
    path, images = code_model
    np.save(tmp_path / "samples.npy", images)
    report = export_in_child(
        path, format="h5", target=tmp_path / "m.h5", samples_path=tmp_path / "samples.npy", timeout=300
    )
    assert report.ok, report.error
    assert report.runtime == "Keras"


def test_inspect_gives_the_shapes_of_a_model(code_model):
    info = inspect_model(code_model[0])
    assert info.ok
    assert info.input_shape == [None, SIZE, SIZE, 3]
    assert info.output_shape == [None, 3]


def test_inspect_refuses_a_lambda_layer_through_safe_mode(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Lambda(lambda x: x / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.save(tmp_path / "lambda.keras")
    info = inspect_in_child(tmp_path / "lambda.keras", timeout=120)
    assert not info.ok
    assert "safe mode" in info.error


def test_inspect_refuses_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.keras").write_text("not a model")
    info = inspect_model(tmp_path / "notes.keras")
    assert not info.ok
    assert "not a Keras model" in info.error


def _small_pretrained(seed: int, num_classes: int = 3):
    """A model shaped as transfer.assemble_model makes it, on a small stand-in backbone (grey input)."""
    from keras import layers

    from ml import transfer

    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), layers.Conv2D(4, 3, activation="relu"), layers.GlobalAveragePooling2D()],
        name="stand_in",
    )
    backbone.trainable = False
    head = transfer.build_head(dimensions=4, num_classes=num_classes, dropout=0.2)
    generator = np.random.default_rng(seed)
    head.get_layer("predictions").set_weights(
        [
            generator.normal(size=(4, num_classes)).astype("float32"),
            generator.normal(size=num_classes).astype("float32"),
        ]
    )
    return backbone, transfer.assemble_model(backbone, head, channels=1)


def test_a_pretrained_heads_onnx_export_reuses_the_backbones_conversion_and_is_proven(tmp_path, monkeypatch):
    from ml import export

    backbone, model = _small_pretrained(seed=1)
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 1)).astype(np.uint8)
    cache = tmp_path / "onnx"

    first = export.export_loaded_model(
        model, format="onnx", target=tmp_path / "a.onnx", images=images, cache_folder=cache
    )
    assert first.ok, first.error
    assert len(list(cache.glob("extractor-*.onnx"))) == 1

    # Another head on the same backbone (another run): no conversion at all, and the proof still holds.
    conversions = []
    real_write = export._write
    monkeypatch.setattr(export, "_write", lambda *args: conversions.append(args[1]) or real_write(*args))
    other_head = keras.models.clone_model(model.layers[-1])
    other_head.set_weights([weight * -2 for weight in model.layers[-1].get_weights()])
    from ml.transfer import assemble_model

    second_model = assemble_model(backbone, other_head, channels=1)
    second = export.export_loaded_model(
        second_model, format="onnx", target=tmp_path / "b.onnx", images=images, cache_folder=cache
    )
    assert second.ok and second.max_difference <= 1e-4 and conversions == []
    answered = export.run_export(tmp_path / "b.onnx", "onnx", images, tmp_path)
    assert not np.allclose(answered, export.run_export(tmp_path / "a.onnx", "onnx", images, tmp_path))

    # Changed backbone weights (fine-tuned, say) are converted anew.
    backbone.layers[0].kernel.assign(backbone.layers[0].kernel * 1.5)
    third = export.export_loaded_model(
        second_model, format="onnx", target=tmp_path / "c.onnx", images=images, cache_folder=cache
    )
    assert third.ok and conversions == ["onnx"] and len(list(cache.glob("extractor-*.onnx"))) == 2
