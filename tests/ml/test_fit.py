import numpy as np
import pytest

from ml.evaluate import classification_report, evaluate
from ml.fit import FitOptions, balanced_class_weights, fit, last_checkpoint, split_indices
from ml.models import ModelSpec, build_model


def two_shades(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark images are label 0, light ones label 1, with a little noise."""
    generator = np.random.default_rng(seed)
    images = np.concatenate([np.full((count, 8, 8, 1), 40), np.full((count, 8, 8, 1), 210)])
    images = np.clip(images + generator.integers(-25, 25, images.shape), 0, 255).astype(np.uint8)
    return images, np.array([0] * count + [1] * count, dtype=np.int32)


def flat_model(learning_rate: float = 0.01):
    return build_model(
        ModelSpec(code="model.add(Flatten())", image_size=8, channels=1, num_classes=2, learning_rate=learning_rate)
    )


def test_splits_are_stratified_disjoint_and_repeat_with_the_seed():
    labels = np.array([0] * 40 + [1] * 20 + [2] * 10)
    splits = split_indices(labels, validation_split=0.2, test_split=0.1, seed=3)
    rows = [*splits.train, *splits.validation, *splits.test]
    assert sorted(rows) == list(range(70))
    assert np.bincount(labels[splits.test]).tolist() == [4, 2, 1]
    assert np.bincount(labels[splits.validation]).tolist() == [8, 4, 2]
    again = split_indices(labels, validation_split=0.2, test_split=0.1, seed=3)
    assert (again.train == splits.train).all() and (again.test == splits.test).all()
    other = split_indices(labels, validation_split=0.2, test_split=0.1, seed=4)
    assert set(other.test) != set(splits.test)


def test_splits_refuse_holding_out_everything():
    with pytest.raises(ValueError, match="leave images to train on"):
        split_indices(np.array([0, 1] * 5), validation_split=0.6, test_split=0.4, seed=0)


def test_balanced_class_weights_make_a_rare_label_count_as_much():
    weights = balanced_class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
    assert weights[1] == pytest.approx(5.0)


def test_history_rows_carry_the_learning_rate_and_the_best_epoch_is_reported():
    images, labels = two_shades(12)
    result = fit(
        flat_model(),
        images,
        labels,
        FitOptions(epochs=3, batch_size=4, validation_split=0.25, verbose=0),
        lambda progress: True,
    )
    assert [row["learning_rate"] for row in result.history] == [pytest.approx(0.01)] * 3
    assert result.metrics["best_epoch"] in {1, 2, 3}
    assert result.metrics["test_count"] == 0


def test_early_stopping_stops_and_restores_the_best_epochs_weights():
    # Validation images carry the opposite labels: the better the model learns, the worse it validates.
    images, labels = two_shades(20)
    splits = split_indices(labels, validation_split=0.25, test_split=0, seed=0)
    labels = labels.copy()
    labels[splits.validation] = 1 - labels[splits.validation]
    model = flat_model(learning_rate=0.05)
    result = fit(
        model,
        images,
        labels,
        FitOptions(epochs=40, batch_size=4, validation_split=0.25, patience=2, verbose=0),
        lambda progress: True,
        splits=splits,
    )
    assert result.stopped_early and len(result.history) < 40
    best = next(row for row in result.history if row["epoch"] == result.best_epoch)
    assert len(result.history) - result.best_epoch == 2
    assert best["val_loss"] == min(row["val_loss"] for row in result.history)
    report = evaluate(model, images, labels, splits.validation, label_names=["dark", "light"])
    assert report["loss"] == pytest.approx(best["val_loss"], rel=1e-3)


def test_a_cancelled_fit_leaves_a_checkpoint_of_its_last_completed_epoch_and_resumes_from_it(tmp_path):
    images, labels = two_shades(12)
    options = FitOptions(epochs=4, batch_size=4, validation_split=0.25, verbose=0, seed=5)
    first = fit(
        flat_model(), images, labels, options, lambda progress: len(progress.history) < 2, checkpoint_folder=tmp_path
    )
    assert first.stopped
    epoch, path = last_checkpoint(tmp_path)
    assert epoch == len(first.history) >= 2
    assert [item.name for item in tmp_path.glob("epoch-*")] == [path.name]

    import keras

    model = keras.saving.load_model(path)
    steps = int(model.optimizer.iterations.numpy())
    assert steps == epoch * 5  # 18 training images in batches of 4, per epoch: the optimizer state came back
    second = fit(
        model, images, labels, options, lambda progress: True, checkpoint_folder=tmp_path, history=first.history[:epoch]
    )
    assert [row["epoch"] for row in second.history] == [1, 2, 3, 4]
    assert second.history[:epoch] == first.history[:epoch]
    assert last_checkpoint(tmp_path)[0] == 4


def test_a_loss_that_becomes_nan_fails_with_a_readable_message():
    images, labels = two_shades(12)
    code = "model.add(Flatten())\nmodel.add(Rescaling(float('inf')))"  # inf - inf on the first step
    model = build_model(ModelSpec(code=code, image_size=8, channels=1, num_classes=2))
    with pytest.raises(ValueError, match="loss became NaN in epoch"):
        fit(model, images, labels, FitOptions(epochs=5, batch_size=4, validation_split=0, verbose=0), lambda p: True)


def test_classification_report_counts_the_confusion_and_lists_the_confident_mistakes_first():
    true = np.array([0, 0, 0, 1, 1, 2])
    probabilities = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.8, 0.2, 0.0],
            [0.3, 0.7, 0.0],  # a 0 taken for a 1
            [0.1, 0.9, 0.0],
            [0.05, 0.0, 0.95],  # a 1 taken for a 2, more confidently
            [0.0, 0.0, 1.0],
        ]
    )
    report = classification_report(true, probabilities, label_names=["a", "b", "c"], item_ids=[10, 11, 12, 13, 14, 15])
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    a, b, c = report["per_class"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(0.6667, abs=1e-4), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert c["precision"] == 0.5 and c["recall"] == 1.0 and c["f1"] == pytest.approx(0.6667, abs=1e-4)
    assert [(row["item"], row["true"], row["predicted"]) for row in report["misclassified"]] == [
        (14, "b", "c"),
        (12, "a", "b"),
    ]
    assert report["misclassified"][0]["confidence"] == 0.95


def test_classification_report_keeps_every_images_prediction_to_find_the_images_behind_a_cell():
    true = np.array([0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    report = classification_report(true, probabilities, label_names=["a", "b"], item_ids=[7, 8, 9])
    assert report["predictions"] == [[7, 0, 0.9], [8, 0, 0.6], [9, 1, 0.8]]
