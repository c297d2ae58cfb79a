"""Evaluate a trained model on a split: loss, accuracy, per-label precision / recall / F1, the
confusion matrix, and the images it got wrong."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.feed import batches


def classification_report(
    true: np.ndarray,
    probabilities: np.ndarray,
    *,
    label_names: Sequence[str],
    item_ids: Sequence[int] | None = None,
    max_misclassified: int = 200,
) -> dict:
    """Everything a practitioner reads about a split, from its true labels and predicted probabilities.

    The confusion matrix has a row per true label and a column per predicted label, both in model
    order. Misclassified items come most confidently wrong first. `predictions` keeps every image's
    answer as `[item, predicted label index, confidence]` rows, so the images behind any cell of the
    matrix, and the images two runs disagree on, can be found later without predicting again.
    """
    true = np.asarray(true, dtype=np.int64)
    num_classes = len(label_names)
    count = len(true)
    if count == 0:
        return {"count": 0}
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(count), predicted]
    likelihood = np.clip(probabilities[np.arange(count), true], 1e-7, 1.0)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)

    per_class = []
    for index, name in enumerate(label_names):
        hits = int(matrix[index, index])
        support = int(matrix[index].sum())
        chosen = int(matrix[:, index].sum())
        precision = hits / chosen if chosen else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(
            {
                "label": name,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
                "support": support,
            }
        )
    present = [row for row in per_class if row["support"]]

    wrong = np.flatnonzero(predicted != true)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:max_misclassified]
    misclassified = [
        {
            "item": int(item_ids[row]) if item_ids is not None else int(row),
            "true": label_names[true[row]],
            "predicted": label_names[predicted[row]],
            "confidence": round(float(confidence[row]), 4),
        }
        for row in wrong
    ]
    return {
        "count": count,
        "loss": round(float(-np.log(likelihood).mean()), 6),
        "accuracy": round(float((predicted == true).mean()), 6),
        "macro_f1": round(float(np.mean([row["f1"] for row in present])), 4) if present else 0.0,
        "labels": list(label_names),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "misclassified_count": int((predicted != true).sum()),
        "misclassified": misclassified,
        "predictions": [
            [
                int(item_ids[row]) if item_ids is not None else int(row),
                int(predicted[row]),
                round(float(confidence[row]), 4),
            ]
            for row in range(count)
        ],
    }


def evaluate(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    label_names: Sequence[str],
    item_ids: Sequence[int] | None = None,
    batch_size: int = 128,
    max_misclassified: int = 200,
) -> dict:
    """Predict the rows `indices` of `images` and report on them (see `classification_report`)."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return {"count": 0}
    data = batches(images, labels, indices, batch_size=batch_size, shuffle=False, seed=0)
    probabilities = np.asarray(model.predict(data, verbose=0), dtype=np.float64)
    ids = None if item_ids is None else [int(item_ids[row]) for row in indices]
    return classification_report(
        np.asarray(labels)[indices],
        probabilities,
        label_names=label_names,
        item_ids=ids,
        max_misclassified=max_misclassified,
    )
