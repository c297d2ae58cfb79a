import numpy as np
import pytest

from management.ml.fit import FitOptions, fit, stratified_split
from management.ml.models import DEFAULT_PROCESS, ModelCodeError, ModelSpec, build_model


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
