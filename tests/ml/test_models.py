import json

import keras
import numpy as np
import pytest

from ml.fit import FitOptions, fit, stratified_split
from ml.models import (
    ARCHITECTURES,
    DEFAULT_PROCESS,
    MIN_IMAGE_SIZE,
    Augmentation,
    ModelCodeError,
    ModelSpec,
    build_model,
    check_spec,
    model_layers,
    parameter_counts,
)


@pytest.mark.parametrize("image_size", [16, 64, 512])
def test_default_code_builds_for_every_supported_size(image_size):
    model = build_model(ModelSpec(code=DEFAULT_PROCESS, image_size=image_size, channels=3, num_classes=4))
    assert model.output_shape == (None, 4)
    assert model.layers[-1].activation.__name__ == "softmax"


def test_code_adds_layers_before_the_softmax_that_kerasui_appends():
    code = "model.add(Flatten())\nmodel.add(Dense(7, activation='relu'))"
    model = build_model(ModelSpec(code=code, image_size=8, channels=1, num_classes=3))
    assert [layer.__class__.__name__ for layer in model.layers] == ["Rescaling", "Flatten", "Dense", "Dense"]
    assert model.layers[-2].units == 7


def test_a_syntax_error_names_its_line():
    with pytest.raises(ModelCodeError, match="line 2: SyntaxError"):
        build_model(ModelSpec(code="model.add(Flatten())\nmodel.add(", image_size=8, channels=1, num_classes=2))


def test_a_runtime_error_names_its_line_and_type():
    code = "model.add(Flatten())\n\nmodel.add(NoSuchLayer(3))"
    with pytest.raises(ModelCodeError, match="line 3: NameError"):
        build_model(ModelSpec(code=code, image_size=8, channels=1, num_classes=2))


def test_layers_that_do_not_fit_the_image_are_a_model_code_error():
    code = "for _ in range(6):\n    model.add(MaxPooling2D())"
    with pytest.raises(ModelCodeError):
        build_model(ModelSpec(code=code, image_size=16, channels=1, num_classes=2))


def test_stratified_split_puts_every_label_in_validation_and_repeats_with_the_seed():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 5)
    train, validation = stratified_split(labels, 0.2, seed=7)
    assert sorted(np.bincount(labels[validation]).tolist()) == [1, 2, 2]
    assert len(set(train) | set(validation)) == len(labels)
    again_train, again_validation = stratified_split(labels, 0.2, seed=7)
    assert (again_validation == validation).all() and (again_train == train).all()


def test_fit_reports_progress_and_a_history_row_per_epoch():
    generator = np.random.default_rng(0)
    images = np.concatenate([np.full((12, 8, 8, 1), 20), np.full((12, 8, 8, 1), 230)]).astype(np.uint8)
    images = np.clip(images + generator.integers(-10, 10, images.shape), 0, 255).astype(np.uint8)
    labels = np.array([0] * 12 + [1] * 12)
    model = build_model(ModelSpec(code="model.add(Flatten())", image_size=8, channels=1, num_classes=2))
    reports = []
    result = fit(
        model,
        images,
        labels,
        FitOptions(epochs=3, batch_size=4, validation_split=0.25, verbose=0),
        lambda progress: reports.append(progress) or True,
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(result.history[0])
    assert reports[-1].percent == 100.0
    assert result.metrics["validation_count"] == 6 and result.metrics["train_count"] == 18


def test_a_reporter_answering_false_stops_training():
    images = np.zeros((16, 8, 8, 1), dtype=np.uint8)
    labels = np.array([0, 1] * 8)
    model = build_model(ModelSpec(code="model.add(Flatten())", image_size=8, channels=1, num_classes=2))
    result = fit(
        model,
        images,
        labels,
        FitOptions(epochs=50, batch_size=2, validation_split=0, verbose=0),
        lambda progress: False,
    )
    assert result.stopped
    assert len(result.history) < 50


# Starting points, augmentation, learning rate and weights files.

RGB_AND_GRAY = [3, 1]


def _images(count: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Images as the models get them: values 0..255."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, channels)).astype("float32")


def _all_layers(model) -> list:
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def _spec(**values) -> ModelSpec:
    defaults = {"code": DEFAULT_PROCESS, "image_size": 32, "channels": 3, "num_classes": 3}
    return ModelSpec(**{**defaults, **values})


@pytest.mark.parametrize("channels", RGB_AND_GRAY)
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_predicts_one_probability_per_class_on_0_to_255_images(architecture, channels):
    size = max(32, MIN_IMAGE_SIZE[architecture])  # pretrained starting points need 96 px
    model = build_model(_spec(architecture=architecture, channels=channels, num_classes=4, image_size=size))
    probabilities = keras.ops.convert_to_numpy(model(_images(2, size, channels), training=False))
    assert probabilities.shape == (2, 4)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.layers[-1].name == "predictions"


@pytest.mark.parametrize(
    "architecture, scale",
    [("code", 1 / 255), ("deep_cnn", 1 / 255), ("mobilenet_v3_small", 1 / 127.5), ("efficientnet_b0", 1 / 255)],
)
def test_every_architecture_rescales_0_to_255_inputs_exactly_once(architecture, scale):
    model = build_model(_spec(architecture=architecture))
    rescalings = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.Rescaling)]
    assert len(rescalings) == 1
    assert rescalings[0].scale == pytest.approx(scale)


@pytest.mark.parametrize("architecture", ["mobilenet_v3_small", "efficientnet_b0"])
def test_images_too_small_for_an_application_are_refused_naming_the_minimum(architecture):
    with pytest.raises(ValueError, match=r"needs images of at least 32×32 px; this image size is 16×16"):
        build_model(_spec(architecture=architecture, image_size=16))


def test_an_unknown_architecture_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model(_spec(architecture="resnet"))


def test_model_code_is_ignored_by_the_other_architectures():
    model = build_model(_spec(architecture="deep_cnn", code="this is not Python"))
    assert model.output_shape == (None, 3)


def test_deep_cnn_halves_the_map_until_4_px_with_filters_capped_at_256():
    small = build_model(_spec(architecture="deep_cnn", image_size=16))
    large = build_model(_spec(architecture="deep_cnn", image_size=512))
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in small.layers) == 2
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in large.layers) == 7
    convolutions = [layer for layer in large.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convolutions[::2]] == [32, 64, 128, 256, 256, 256, 256]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in large.layers) == len(convolutions)
    assert [type(layer).__name__ for layer in large.layers[-3:]] == ["GlobalAveragePooling2D", "Dropout", "Dense"]


def test_the_learning_rate_reaches_the_adam_optimizer():
    model = build_model(_spec(code="model.add(Flatten())", image_size=8, learning_rate=0.0123))
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.0123)


@pytest.mark.parametrize("learning_rate", [0, -0.1, 2.0, float("nan")])
def test_a_learning_rate_out_of_range_is_refused(learning_rate):
    with pytest.raises(ValueError, match="learning_rate"):
        check_spec(_spec(learning_rate=learning_rate))


@pytest.mark.parametrize(
    "values, field",
    [
        ({"flip": "diagonal"}, "flip"),
        ({"rotation": 0.6}, "rotation"),
        ({"zoom": -0.1}, "zoom"),
        ({"zoom": 0.95}, "zoom"),
        ({"contrast": 1.5}, "contrast"),
        ({"contrast": "a lot"}, "contrast"),
    ],
)
def test_augmentation_out_of_range_is_refused_naming_the_field(values, field):
    with pytest.raises(ValueError, match=f"augmentation {field}"):
        Augmentation(**values)


def test_augmentation_is_active_only_when_something_is_switched_on():
    assert not Augmentation().active
    assert Augmentation(flip="vertical").active
    assert Augmentation(contrast=0.1).active
    assert build_model(_spec(code="model.add(Flatten())")).layers[0].name != "augmentation"


AUGMENTATION = Augmentation(flip="horizontal_and_vertical", rotation=0.2, zoom=0.3, contrast=0.5, seed=3)


def test_augmentation_changes_images_in_training_only():
    model = build_model(_spec(image_size=16, augmentation=AUGMENTATION))
    augmentation = model.get_layer("augmentation")
    assert [type(layer).__name__ for layer in augmentation.layers] == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomContrast",
    ]
    images = _images(4, 16, 3)
    assert np.array_equal(keras.ops.convert_to_numpy(augmentation(images, training=False)), images)
    changed = keras.ops.convert_to_numpy(augmentation(images, training=True))
    assert changed.shape == images.shape
    assert not np.allclose(changed, images)
    assert changed.min() >= 0 and changed.max() <= 255


def test_an_augmented_model_predicts_like_the_same_model_without_augmentation():
    augmented = build_model(_spec(image_size=16, augmentation=AUGMENTATION))
    plain = build_model(_spec(image_size=16))
    assert len(augmented.layers) == len(plain.layers) + 1
    for source, target in zip(augmented.layers[1:], plain.layers, strict=True):
        target.set_weights(source.get_weights())
    images = _images(4, 16, 3)
    first = keras.ops.convert_to_numpy(augmented(images, training=False))
    assert np.array_equal(first, keras.ops.convert_to_numpy(augmented(images, training=False)))
    assert np.allclose(first, keras.ops.convert_to_numpy(plain(images, training=False)), atol=1e-6)


def test_the_augmentation_seed_repeats_the_same_random_changes():
    images = _images(4, 16, 3)

    def augmented(seed: int) -> np.ndarray:
        spec = _spec(image_size=16, augmentation=Augmentation(rotation=0.3, zoom=0.3, seed=seed))
        return keras.ops.convert_to_numpy(build_model(spec).get_layer("augmentation")(images, training=True))

    assert np.array_equal(augmented(5), augmented(5))
    assert not np.array_equal(augmented(5), augmented(6))


def test_an_augmented_model_trains_on_a_batch():
    model = build_model(_spec(image_size=16, augmentation=AUGMENTATION))
    loss, accuracy = model.train_on_batch(_images(4, 16, 3), np.array([0, 1, 2, 0]))
    assert np.isfinite(loss) and 0 <= accuracy <= 1


@pytest.mark.parametrize("architecture, image_size", [("code", 16), ("deep_cnn", 16), ("mobilenet_v3_small", 32)])
def test_a_saved_model_loads_in_safe_mode_and_predicts_the_same(architecture, image_size, tmp_path):
    model = build_model(_spec(architecture=architecture, image_size=image_size, augmentation=AUGMENTATION))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    images = _images(3, image_size, 3)
    assert loaded.get_layer("augmentation").layers[2].height_factor == AUGMENTATION.zoom
    assert np.array_equal(
        keras.ops.convert_to_numpy(model(images, training=False)),
        keras.ops.convert_to_numpy(loaded(images, training=False)),
    )


@pytest.fixture
def mobilenet_weights(tmp_path):
    """The weights of a from-scratch MobileNetV3-Small backbone (no top) for 32 px rgb images."""
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(path)
    return backbone, str(path)


def test_a_weights_file_starts_the_backbone_at_any_image_size(mobilenet_weights):
    backbone, path = mobilenet_weights
    model = build_model(_spec(architecture="mobilenet_v3_small", image_size=48, weights_path=path))
    loaded = model.get_layer(backbone.name).get_weights()
    assert len(loaded) == len(backbone.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(loaded, backbone.get_weights(), strict=True))


def test_a_weights_file_for_other_channels_is_a_clear_error(mobilenet_weights):
    _, path = mobilenet_weights
    expected = r"the weights file does not fit mobilenet_v3_small at 32×32×1 .*layer conv needs weights of shape"
    with pytest.raises(ValueError, match=expected):
        build_model(_spec(architecture="mobilenet_v3_small", channels=1, weights_path=path))


def test_a_weights_file_for_another_architecture_is_a_clear_error(mobilenet_weights):
    _, path = mobilenet_weights
    with pytest.raises(
        ValueError, match="the weights file does not fit efficientnet_b0 at 32×32×3: .*layers do not match"
    ):
        build_model(_spec(architecture="efficientnet_b0", weights_path=path))


def test_a_weights_file_that_is_not_one_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.weights.h5"
    path.write_text("not HDF5")
    with pytest.raises(ValueError, match="the weights file does not fit mobilenet_v3_small"):
        build_model(_spec(architecture="mobilenet_v3_small", weights_path=str(path)))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"architecture": "mobilenet_v3_small", "weights_path": "/nowhere/b.weights.h5"}, "does not exist"),
        ({"architecture": "mobilenet_v3_small", "weights_path": "/nowhere/b.bin"}, "must end in .weights.h5"),
        ({"architecture": "code", "weights_path": "/nowhere/b.weights.h5"}, "can only start"),
    ],
)
def test_a_weights_file_is_checked_before_keras_sees_it(values, message):
    with pytest.raises(ValueError, match=message):
        check_spec(_spec(**values))


def test_model_layers_and_parameter_counts_describe_the_top_level_layers():
    model = build_model(_spec(architecture="deep_cnn", image_size=16, augmentation=Augmentation(flip="horizontal")))
    rows = model_layers(model)
    assert rows[0] == {"name": "augmentation", "type": "Sequential", "output_shape": [None, 16, 16, 3], "params": 0}
    assert rows[2]["type"] == "Conv2D" and rows[2]["output_shape"] == [None, 16, 16, 32]
    assert rows[2]["params"] == 3 * 3 * 3 * 32
    assert rows[-1] == {"name": "predictions", "type": "Dense", "output_shape": [None, 3], "params": 64 * 3 + 3}
    counts = parameter_counts(model)
    assert counts["total"] == model.count_params() == sum(row["params"] for row in rows)
    # Batch normalisation keeps a moving mean and variance per channel that training does not update.
    assert counts["non_trainable"] == 2 * (2 * 32 + 2 * 64) > 0
    assert counts["trainable"] + counts["non_trainable"] == counts["total"]


def test_a_model_code_error_carries_its_line():
    with pytest.raises(ModelCodeError) as syntax:
        build_model(_spec(code="model.add(Flatten())\n\nmodel.add("))
    with pytest.raises(ModelCodeError) as runtime:
        build_model(_spec(code="x = 1\nmodel.add(Conv(3))"))
    with pytest.raises(ModelCodeError) as shapes:
        build_model(_spec(code="for _ in range(9):\n    model.add(MaxPooling2D())", image_size=16))
    # Keras builds each layer as it is added, so even a layer that does not fit has its line.
    assert (syntax.value.line, runtime.value.line, shapes.value.line) == (3, 2, 2)
    assert str(shapes.value).startswith("line 2: ")


def test_a_spec_survives_a_trip_through_json():
    spec = _spec(architecture="deep_cnn", learning_rate=0.01, augmentation=AUGMENTATION, weights_path=None)
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec
