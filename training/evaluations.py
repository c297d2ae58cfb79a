"""Reading a run's evaluation: the images behind a cell of its confusion matrix.

An evaluation keeps every image's answer as `predictions` rows `[item, predicted label index,
confidence]` (ml/evaluate.py) and the true label of the misclassified ones, so a cell's images are
found without predicting again, and without trusting labels edited since the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets.models import DataSetItem
from management.errors import Conflict, NotFound, ServiceError
from training.models import TrainingRun


@dataclass(frozen=True)
class CellImage:
    """One image behind a confusion cell: its id, the item (None once deleted) and the model's confidence."""

    item_id: int
    item: DataSetItem | None
    confidence: float


@dataclass(frozen=True)
class ConfusionCell:
    """The images of a split with one true label that the run's model gave one predicted label."""

    run: TrainingRun
    split: str
    true_label: str
    predicted_label: str
    count: int
    images: list[CellImage] = field(default_factory=list)


def _report(run: TrainingRun, split: str) -> dict:
    report = run.evaluation.get(split) if isinstance(run.evaluation, dict) else None
    if not report or not report.get("count"):
        raise NotFound(f"run {run.pk} has no evaluation of a '{split}' split", field="split")
    return report


def evaluation_has_predictions(*, report: dict) -> bool:
    """Whether an evaluation kept every image's prediction (runs evaluated before that did not); they are
    stored apart (RunData), so the run page links the matrix's cells without reading them."""
    return bool(report.get("predictions_stored"))


def evaluation_confusion_cell(*, run: TrainingRun, split: str, true_index: int, predicted_index: int) -> ConfusionCell:
    """The images behind the cell (row `true_index`, column `predicted_index`) of a split's confusion
    matrix, most confident first.

    An image's true label is the one it had when the run evaluated it: recorded for misclassified
    images, and the predicted one for the rest. When the evaluation kept only the most confident
    mistakes, an image it did not record counts as right if its label now is the predicted one, and
    is otherwise read with its label now.
    """
    report = _report(run, split)
    labels = report["labels"]
    for name, index in (("true", true_index), ("predicted", predicted_index)):
        if not 0 <= index < len(labels):
            raise NotFound(f"the {name} label index {index} is not one of the {len(labels)} labels", field=name)
    if not evaluation_has_predictions(report=report):
        raise Conflict(
            f"the evaluation of run {run.pk} did not keep its predictions (it predates them): train again",
            field="run",
        )
    recorded = {entry["item"]: entry["true"] for entry in report.get("misclassified", [])}
    complete = report.get("misclassified_count", 0) <= len(recorded)
    rows = [row for row in run.predictions.get(split, []) if row[1] == predicted_index]
    items = DataSetItem.objects.filter(pk__in=[row[0] for row in rows], dataset_id=run.dataset_id).in_bulk()
    true_label, predicted_label = labels[true_index], labels[predicted_index]
    images = []
    for item_id, _, confidence in rows:
        item = items.get(item_id)
        if item_id in recorded:
            truth = recorded[item_id]
        elif complete:
            truth = predicted_label
        elif item is not None:
            truth = predicted_label if item.label == predicted_label else item.label
        else:
            continue  # a deleted image among unrecorded mistakes: its label then is unknown
        if truth == true_label:
            images.append(CellImage(item_id=item_id, item=item, confidence=confidence))
    images.sort(key=lambda image: (-image.confidence, image.item_id))
    count = report["confusion_matrix"][true_index][predicted_index]
    return ConfusionCell(
        run=run, split=split, true_label=true_label, predicted_label=predicted_label, count=count, images=images
    )


def evaluation_confusion_cell_by_label(
    *, run: TrainingRun, split: str, true_label: str, predicted_label: str
) -> ConfusionCell:
    """As evaluation_confusion_cell, the cell named by its true and predicted labels."""
    labels = _report(run, split)["labels"]
    for name, label in (("true", true_label), ("predicted", predicted_label)):
        if label not in labels:
            raise ServiceError(f"'{label}' is not one of the labels of run {run.pk}: {', '.join(labels)}", field=name)
    return evaluation_confusion_cell(
        run=run, split=split, true_index=labels.index(true_label), predicted_index=labels.index(predicted_label)
    )
