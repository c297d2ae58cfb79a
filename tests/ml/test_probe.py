"""The linear probe (L2 logistic regression by L-BFGS, its strength by cross-validation) and
temperature scaling: deterministic, converged, and folded into an ordinary Dense softmax layer."""

import keras
import numpy as np

from ml.calibration import fit_temperature, fold_temperature, reliability, with_temperature
from ml.probe import fit_linear_probe, log_softmax


def blobs(per_label: int, *, dimensions: int = 20, labels: int = 3, spread: float = 1.0, seed: int = 0):
    generator = np.random.default_rng(seed)
    centres = generator.normal(0, 3, (labels, dimensions))
    x = np.concatenate(
        [centres[label] + generator.normal(0, spread, (per_label, dimensions)) for label in range(labels)]
    )
    # Features of a backbone are far from standardised: a large offset and scale the probe must undo.
    return (x * 40 + 500).astype(np.float32), np.repeat(np.arange(labels), per_label)


def test_the_probe_learns_and_its_weights_on_raw_features_match_sklearns_answers():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(12)
    fitted = fit_linear_probe(x, y, num_classes=3, seed=0)

    probabilities = np.exp(log_softmax(x.astype(np.float64) @ fitted.kernel + fitted.bias))
    # sklearn on the features centred and scaled to unit average variance, as the probe fits them.
    centred = x.astype(np.float64) - x.mean(axis=0)
    scaled = centred / np.sqrt((centred**2).sum(axis=1).mean() / x.shape[1])
    reference = LogisticRegression(C=fitted.c, max_iter=1000, tol=1e-6).fit(scaled, y)
    np.testing.assert_allclose(probabilities, reference.predict_proba(scaled), atol=1e-3)
    assert (probabilities.argmax(axis=1) == y).mean() == 1.0
    assert fitted.folds == 5 and [row["c"] for row in fitted.scores] == sorted(row["c"] for row in fitted.scores)


def test_the_l2_strength_is_chosen_by_cross_validation_and_the_fit_is_deterministic():
    x, y = blobs(6, spread=4.0, dimensions=50)
    first = fit_linear_probe(x, y, num_classes=3, seed=3)
    second = fit_linear_probe(x, y, num_classes=3, seed=3)

    assert first.folds == 5
    best = max(first.scores, key=lambda row: (row["accuracy"], -row["loss"]))
    assert first.c == best["c"]
    np.testing.assert_array_equal(first.kernel, second.kernel)
    np.testing.assert_array_equal(first.bias, second.bias)


def test_two_labels_and_labels_without_training_images_give_a_full_softmax_layer():
    x, y = blobs(5, labels=2)
    fitted = fit_linear_probe(x, y, num_classes=4, seed=0)  # labels 2 and 3 have no images

    assert fitted.kernel.shape == (20, 4) and fitted.bias.shape == (4,)
    predicted = (x.astype(np.float64) @ fitted.kernel + fitted.bias).argmax(axis=1)
    assert predicted.tolist() == y.tolist()


def test_temperature_scaling_undoes_overconfidence_and_lowers_the_calibration_error():
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 4, 2000)
    # x ~ N(1.5 on the true label, 1): the calibrated logits are 1.5 x; made three times too sharp,
    # 4.5 x, the temperature that undoes it is 3.
    x = generator.normal(0, 1, (2000, 4))
    x[np.arange(2000), labels] += 1.5
    overconfident = np.exp(log_softmax(x * 4.5))

    temperature = fit_temperature(np.log(overconfident), labels)
    calibrated = with_temperature(overconfident, temperature)

    assert 2.6 < temperature < 3.4
    before, after = reliability(overconfident, labels)["ece"], reliability(calibrated, labels)["ece"]
    assert after < before / 3
    assert (calibrated.argmax(axis=1) == overconfident.argmax(axis=1)).all()  # the answers do not change


def test_the_reliability_curve_counts_each_bin_and_each_threshold():
    probabilities = np.array([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    curve = reliability(probabilities, labels)

    assert [(row["from"], row["count"], row["accuracy"]) for row in curve["bins"]] == [
        (0.5, 1, 1.0),
        (0.6, 1, 1.0),
        (0.9, 2, 0.5),
    ]
    at_09 = next(row for row in curve["thresholds"] if row["threshold"] == 0.9)
    assert at_09 == {"threshold": 0.9, "answered": 0.5, "accuracy": 0.5}
    expected = (abs(1 - 0.55) + abs(1 - 0.7) + 2 * abs(0.5 - 0.935)) / 4
    assert abs(curve["ece"] - expected) < 1e-4


def test_a_temperature_folded_into_the_softmax_layer_gives_the_calibrated_probabilities():
    from keras import layers

    head = keras.Sequential([keras.Input((5,)), layers.Dense(3, activation="softmax", name="predictions")], name="head")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, head(layers.Identity()(inputs)))
    x = np.random.default_rng(1).normal(0, 2, (8, 5)).astype(np.float32)
    before = model.predict(x, verbose=0)

    assert fold_temperature(model, 2.5) is True
    np.testing.assert_allclose(model.predict(x, verbose=0), with_temperature(before, 2.5), atol=1e-5)
    assert fold_temperature(keras.Sequential([keras.Input((5,)), layers.Dense(3)]), 2.0) is False
