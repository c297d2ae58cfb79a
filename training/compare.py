"""Run comparison: two or more runs of one dataset side by side — options, model code, curves, evaluation,
and the held-out images that flipped between right and wrong.

Reads only. The first run is the baseline: each other run is compared with it (differences are the other's
minus the baseline's). The admin's compare page and the API's /api/trainingrun/compare/ present the same dict.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from datasets.models import DataSetItem
from management.errors import NotFound, ServiceError
from management.options import OPTIONS
from training.models import TrainingRun
from training.promotion import HELD_OUT, held_out_report, same_held_out_split

MAX_RUNS = 10
MAX_FLIPS = 200
SPLITS = (*HELD_OUT, "training")
# The snapshot the options' table compares (the model code has its own diff).
COMPARED_OPTIONS = [
    "labels",
    *[option.name for option in OPTIONS if option.snapshot is not None and option.name != "process"],
]


def compare_ids_parse(*, values: Iterable[str]) -> list[int]:
    """Run ids from `?ids=3,5` (or `?ids=3&ids=5`), in order, without repeats; a ServiceError naming `ids`."""
    ids: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            # isdigit() is true for '²' and other Unicode digits that int() refuses: ASCII digits only.
            if not (part.isascii() and part.isdigit()) or len(part) > 18:
                raise ServiceError(f"'{part[:30]}' is not a run id: give run ids separated by commas", field="ids")
            if int(part) not in ids:
                ids.append(int(part))
    if len(ids) < 2:
        raise ServiceError("give at least two different run ids separated by commas, e.g. ids=3,5", field="ids")
    if len(ids) > MAX_RUNS:
        raise ServiceError(f"compare at most {MAX_RUNS} runs at once", field="ids")
    return ids


def runs_for_comparison(*, ids: list[int]) -> list[TrainingRun]:
    """The runs `ids`, in that order; NotFound naming `ids` for any that does not exist."""
    found = {run.pk: run for run in TrainingRun.objects.select_related("dataset").filter(pk__in=ids)}
    missing = [str(run_id) for run_id in ids if run_id not in found]
    if missing:
        raise NotFound(f"no run {', '.join(missing)}", field="ids")
    return [found[run_id] for run_id in ids]


def _evaluation_summary(evaluation: dict) -> dict:
    summary = {}
    for name in SPLITS:
        report = (evaluation or {}).get(name) or {}
        if not report.get("count"):
            continue
        summary[name] = {
            "count": report["count"],
            "accuracy": report.get("accuracy"),
            "loss": report.get("loss"),
            "macro_f1": report.get("macro_f1"),
            "per_label_f1": {row["label"]: row["f1"] for row in report.get("per_class", [])},
            "labels": report.get("labels", []),
            "confusion_matrix": report.get("confusion_matrix", []),
        }
    return summary


def _run_summary(run: TrainingRun) -> dict:
    held_out = held_out_report(run.evaluation)
    return {
        "id": run.pk,
        "status": run.status,
        "is_current": run.is_current,
        "imported": run.imported,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "accuracy": run.accuracy,
        "held_out": held_out[0] if held_out else None,
        "promotion": run.promotion,
        "options": {name: getattr(run, name) for name in COMPARED_OPTIONS} | {"augmentation": run.augmentation},
        "process": run.process,
        "history": run.history,
        "evaluation": _evaluation_summary(run.evaluation),
    }


def _options_that_differ(runs: list[TrainingRun]) -> list[dict]:
    rows = []
    for name in [*COMPARED_OPTIONS, "augmentation"]:
        values = [getattr(run, name) for run in runs]
        if any(value != values[0] for value in values[1:]):
            rows.append({"name": name, "values": values})
    return rows


def _code_diff(baseline: TrainingRun, other: TrainingRun) -> dict:
    lines = difflib.unified_diff(
        baseline.process.replace("\r\n", "\n").splitlines(),
        other.process.replace("\r\n", "\n").splitlines(),
        fromfile=f"run {baseline.pk}",
        tofile=f"run {other.pk}",
        lineterm="",
    )
    diff = "\n".join(lines)
    used = [run.pk for run in (baseline, other) if run.architecture == "code"]
    note = "" if len(used) == 2 else "the model code is only used by runs whose starting point is the model code"
    if len(used) < 2:
        note += f" (runs using it here: {', '.join(map(str, used)) or 'none'})"
    return {"runs": [baseline.pk, other.pk], "same": not diff, "diff": diff, "note": note}


def _confusion_difference(baseline: TrainingRun, other: TrainingRun, split: str | None) -> dict:
    if split is None:
        return {"matrix": None, "note": "no split evaluated in both runs"}
    first, second = baseline.evaluation[split], other.evaluation[split]
    if first.get("labels") != second.get("labels"):
        return {
            "matrix": None,
            "note": f"the label orders differ ({', '.join(first.get('labels', []))} in run {baseline.pk}; "
            f"{', '.join(second.get('labels', []))} in run {other.pk}): the matrices cannot be subtracted",
        }
    matrix = [
        [theirs - ours for ours, theirs in zip(row_a, row_b, strict=True)]
        for row_a, row_b in zip(first["confusion_matrix"], second["confusion_matrix"], strict=True)
    ]
    return {"labels": first["labels"], "matrix": matrix, "note": ""}


def _truths(report: dict, predictions: list[list]) -> dict[int, str]:
    """Each evaluated image's label when it was evaluated: the misclassified list names the wrong ones'
    labels; a right prediction is its label. Images missing from a shortened list are left out."""
    labels = report.get("labels", [])
    wrong = {entry["item"]: entry["true"] for entry in report.get("misclassified", [])}
    complete = report.get("misclassified_count", len(wrong)) <= len(wrong)
    truths = {}
    for item, predicted, _ in predictions:
        if item in wrong:
            truths[item] = wrong[item]
        elif complete:
            truths[item] = labels[predicted]
    return truths


def _flips(baseline: TrainingRun, other: TrainingRun, split: str | None) -> dict:
    """The images of `split` one run got right and the other wrong, with both predictions."""
    if split is None:
        return {
            "split": None,
            "items": [],
            "fixed": 0,
            "broken": 0,
            "note": "the runs were not evaluated on the "
            "same held-out images (a relabelling, new images, another seed or split): no image to follow",
        }
    missing = [run.pk for run in (baseline, other) if split not in run.predictions]
    if missing:
        note = "; ".join(f"predictions not stored for run {pk} (trained before this version)" for pk in missing)
        return {"split": split, "items": [], "fixed": 0, "broken": 0, "note": note}
    reports = [baseline.evaluation[split], other.evaluation[split]]
    predictions = [baseline.predictions[split], other.predictions[split]]
    answers = [
        {item: (report["labels"][index], confidence) for item, index, confidence in rows}
        for report, rows in zip(reports, predictions, strict=True)
    ]
    truths = [_truths(report, rows) for report, rows in zip(reports, predictions, strict=True)]
    flips, fixed, broken, unknown = [], 0, 0, 0
    for item in sorted(answers[0].keys() & answers[1].keys()):
        if item not in truths[0] or item not in truths[1]:
            unknown += 1
            continue
        right = [answers[side][item][0] == truths[side][item] for side in (0, 1)]
        if right[0] == right[1]:
            continue
        fixed, broken = fixed + right[1], broken + right[0]
        flips.append(
            {
                "item": item,
                "label": truths[1][item],
                "label_before": truths[0][item],
                "change": "fixed" if right[1] else "broken",
                "before": {
                    "run": baseline.pk,
                    "predicted": answers[0][item][0],
                    "confidence": answers[0][item][1],
                    "right": right[0],
                },
                "after": {
                    "run": other.pk,
                    "predicted": answers[1][item][0],
                    "confidence": answers[1][item][1],
                    "right": right[1],
                },
            }
        )
    # The newly wrong first: they are what a promotion would cost.
    flips.sort(key=lambda flip: (flip["change"] != "broken", -flip["after"]["confidence"]))
    note = f"{unknown} images left out: their labels were not all stored" if unknown else ""
    return {"split": split, "items": flips[:MAX_FLIPS], "fixed": fixed, "broken": broken, "note": note}


def _pair(baseline: TrainingRun, other: TrainingRun) -> dict:
    same = same_held_out_split((baseline.splits, baseline.evaluation), (other.splits, other.evaluation))
    split = same
    if split is None:
        split = next(
            (
                name
                for name in SPLITS
                if (baseline.evaluation or {}).get(name, {}).get("count")
                and (other.evaluation or {}).get(name, {}).get("count")
            ),
            None,
        )
    note = (
        f"both evaluated on the same {same} images"
        if same
        else f"evaluated on different images: each run's own {split} images"
        if split
        else "no split was evaluated in both runs"
    )
    return {
        "runs": [baseline.pk, other.pk],
        "split": split,
        "same_images": same is not None,
        "note": note,
        "confusion_difference": _confusion_difference(baseline, other, split),
        "flips": _flips(baseline, other, same),
        "code": _code_diff(baseline, other),
    }


HIDDEN_CODE = "the model code is shown only to accounts that may view the dataset"


def runs_compare(*, runs: list[TrainingRun], show_dataset: bool = True) -> dict:
    """Two or more runs of one dataset side by side; the first is the baseline of every difference.

    A ServiceError naming `ids` for fewer than two runs or runs of different datasets. Without
    `show_dataset` (a user who may view runs but not their dataset) the dataset's name and the runs'
    model code are left out (None, and a note instead of the code's diff).
    """
    if len({run.pk for run in runs}) < 2:
        raise ServiceError("give at least two different runs to compare", field="ids")
    datasets = {run.dataset_id for run in runs}
    if len(datasets) > 1:
        owners = ", ".join(f"run {run.pk} of dataset {run.dataset_id}" for run in runs)
        raise ServiceError(f"compare runs of one dataset: {owners}", field="ids")
    baseline = runs[0]
    comparison = {
        "dataset": {"id": baseline.dataset_id, "name": baseline.dataset.name},
        "baseline": baseline.pk,
        "runs": [_run_summary(run) for run in runs],
        "options_that_differ": _options_that_differ(runs),
        "pairs": [_pair(baseline, other) for other in runs[1:]],
    }
    if not show_dataset:
        comparison["dataset"]["name"] = None
        for summary in comparison["runs"]:
            summary["process"] = None
        for pair in comparison["pairs"]:
            pair["code"] = {"runs": pair["runs"], "same": None, "diff": "", "note": HIDDEN_CODE}
    return comparison


def compare_thumbnails(*, comparison: dict) -> dict[int, DataSetItem]:
    """The dataset items behind the flipped images (deleted ones are absent)."""
    ids = {flip["item"] for pair in comparison["pairs"] for flip in pair["flips"]["items"]}
    return DataSetItem.objects.filter(pk__in=ids, dataset_id=comparison["dataset"]["id"]).in_bulk()
