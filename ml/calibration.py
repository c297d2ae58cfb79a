"""Calibrated confidence: temperature scaling fitted on held-out images, and how well calibrated.

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted on held-out images;
the answers (the argmax) do not change, their confidence does. T is folded into the model's last
Dense softmax layer (kernel and bias divided by T), so every export carries the calibrated model.
"""

from __future__ import annotations

import numpy as np

from ml.probe import log_softmax

CALIBRATION_BINS = 10


# Fewer held-out images than this: no temperature is fitted (T = 1), a few images say too little.
MIN_CALIBRATION_IMAGES = 10
# The prior that keeps T near 1 on few images: worth this many images' log loss at log T = ±1.
PRIOR_IMAGES = 2.0
TEMPERATURE_RANGE = (0.25, 20.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the log loss of softmax(logits / T) (Guo et al., 2017).

    A log-normal prior around T = 1 (PRIOR_IMAGES) keeps a few images that are all right from
    driving T towards 0; T stays in TEMPERATURE_RANGE. Searched on a log grid then refined (one
    parameter: no solver needed); 1.0 with fewer than MIN_CALIBRATION_IMAGES images.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < MIN_CALIBRATION_IMAGES:
        return 1.0
    rows = np.arange(len(labels))

    def loss(t: float) -> float:
        return float(-log_softmax(logits / t)[rows, labels].sum() + PRIOR_IMAGES * np.log(t) ** 2)

    grid = np.exp(np.linspace(np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1]), 61))
    best = min(grid, key=loss)
    low, high = best / 1.12, best * 1.12
    for _ in range(40):  # golden-section search around the best grid point
        a = high - (high - low) / 1.618
        b = low + (high - low) / 1.618
        if loss(a) < loss(b):
            high = b
        else:
            low = a
    temperature = float(np.clip((low + high) / 2, *TEMPERATURE_RANGE))
    return temperature if loss(temperature) <= loss(1.0) else 1.0


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """Logits giving `probabilities` under softmax (up to a constant per row)."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """The expected calibration error and the reliability curve: per confidence bin, how many images
    and how often the answer was right; and, per threshold, the share answered and their accuracy."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    count = len(labels)
    if count == 0:
        return {"ece": None, "bins": [], "thresholds": []}
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(count), predicted]
    right = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high) if low > 0 else (confidence <= high)
        n = int(inside.sum())
        if not n:
            continue
        accuracy = float(right[inside].mean())
        mean_confidence = float(confidence[inside].mean())
        ece += n / count * abs(accuracy - mean_confidence)
        rows.append(
            {
                "from": round(float(low), 2),
                "to": round(float(high), 2),
                "count": n,
                "confidence": round(mean_confidence, 4),
                "accuracy": round(accuracy, 4),
            }
        )
    thresholds = []
    for threshold in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        answered = confidence >= threshold
        thresholds.append(
            {
                "threshold": threshold,
                "answered": round(float(answered.mean()), 4),
                "accuracy": round(float(right[answered].mean()), 4) if answered.any() else None,
            }
        )
    return {"ece": round(float(ece), 4), "bins": rows, "thresholds": thresholds}


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): what the model gives once T is folded into it."""
    return np.exp(log_softmax(logits_of(probabilities) / temperature))


def fold_temperature(model, temperature: float) -> bool:
    """Divide the weights of the model's softmax layer named "predictions" by `temperature`.

    Looks into nested models (a pretrained model's head). False when there is no such layer (the
    model is left as it was).
    """
    layer = _predictions_layer(model)
    if layer is None:
        return False
    layer.set_weights([weight / np.float32(temperature) for weight in layer.get_weights()])
    return True


def _predictions_layer(model):
    import keras

    for layer in reversed(model.layers):
        if layer.name == "predictions" and isinstance(layer, keras.layers.Dense):
            activation = getattr(layer.activation, "__name__", "")
            return layer if activation == "softmax" else None
        if isinstance(layer, keras.Model):
            found = _predictions_layer(layer)
            if found is not None:
                return found
    return None
