"""The numpy head trainer: it learns, its losses are Keras' losses, and it keeps the best epoch."""

import keras
import numpy as np

from ml.head import fit_softmax_head


def separable(count: int = 120, dimensions: int = 32, classes: int = 3, seed: int = 0):
    generator = np.random.default_rng(seed)
    centres = generator.normal(0, 3, (classes, dimensions))
    labels = np.arange(count) % classes
    return (centres[labels] + generator.normal(0, 1, (count, dimensions))).astype(np.float32), labels


def test_the_head_learns_separable_features_and_records_fits_history():
    x, y = separable()
    fitted = fit_softmax_head(
        x[:90], y[:90], num_classes=3, epochs=20, batch_size=16, learning_rate=0.01, validation=(x[90:], y[90:])
    )
    assert [row["epoch"] for row in fitted.history] == list(range(1, 21))
    assert set(fitted.history[0]) == {
        "epoch",
        "accuracy",
        "loss",
        "val_accuracy",
        "val_loss",
        "learning_rate",
        "seconds",
    }
    assert fitted.history[-1]["val_accuracy"] == 1.0
    assert ((x[90:] @ fitted.kernel + fitted.bias).argmax(axis=1) == y[90:]).all()


def test_its_validation_loss_is_the_loss_keras_computes_for_the_same_weights():
    x, y = separable()
    fitted = fit_softmax_head(
        x[:90], y[:90], num_classes=3, epochs=3, batch_size=16, learning_rate=0.01, validation=(x[90:], y[90:])
    )
    head = keras.Sequential([keras.Input((32,)), keras.layers.Dense(3, activation="softmax")])
    head.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    head.set_weights([fitted.kernel, fitted.bias])
    loss, accuracy = head.evaluate(x[90:], y[90:], verbose=0)
    best = fitted.history[fitted.best_epoch - 1]
    assert abs(loss - best["val_loss"]) < 1e-4 and abs(accuracy - best["val_accuracy"]) < 1e-6


def test_it_stops_after_patience_epochs_without_progress_and_keeps_the_best():
    x, y = separable()
    # A step size this large makes the validation loss bounce: no progress for 2 epochs comes soon.
    fitted = fit_softmax_head(
        x[:90],
        y[:90],
        num_classes=3,
        epochs=200,
        batch_size=8,
        learning_rate=1.0,
        validation=(x[90:], y[90:]),
        patience=2,
        dropout=0.5,
    )
    assert fitted.stopped_early and len(fitted.history) < 200
    assert len(fitted.history) - fitted.best_epoch == 2
    assert fitted.history[fitted.best_epoch - 1]["val_loss"] == min(row["val_loss"] for row in fitted.history)


def test_a_reporter_answering_false_stops_it(monkeypatch):
    from ml import head

    monkeypatch.setattr(head, "REPORT_INTERVAL", 0.0)  # report every epoch
    x, y = separable()
    reports = []

    def report(progress):
        reports.append(progress.epoch)
        return False

    fitted = fit_softmax_head(x, y, num_classes=3, epochs=50, batch_size=16, learning_rate=0.01, report=report)
    assert fitted.stopped and len(fitted.history) == reports[0] == 1
