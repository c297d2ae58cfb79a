"""The run page as a report: its headline and its numbers in words and percentages.

Presentation only: reads a TrainingRun, writes nothing. The admin's run page and its templates use it.
"""

import math

from django.utils import timezone

from training.models import TrainingRun

# What each final metric and history column means, in words. A name not listed is shown spaced out.
METRIC_NAMES = {
    "accuracy": "accuracy on the training images",
    "loss": "loss on the training images",
    "val_accuracy": "accuracy on the validation images",
    "val_loss": "loss on the validation images",
    "test_accuracy": "accuracy on the test images",
    "test_loss": "loss on the test images",
    "train_count": "training images",
    "validation_count": "validation images",
    "test_count": "test images",
    "epochs_completed": "epochs trained",
    "best_epoch": "best epoch (its weights are the model's)",
    "stopped_early": "stopped early",
}
HISTORY_NAMES = {
    "epoch": "epoch",
    "accuracy": "training accuracy",
    "loss": "training loss",
    "val_accuracy": "validation accuracy",
    "val_loss": "validation loss",
    "learning_rate": "learning rate",
    "seconds": "time",
}


def number_text(name: str, value) -> str:
    """One value as a person reads it: accuracies in percent, losses to three digits, yes or no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "not a number (training diverged)"
        if name.endswith("accuracy"):
            return f"{value:.1%}"
        if name == "seconds":
            return f"{value:.1f} s"
        if name == "learning_rate":
            return f"{value:g}"
        return f"{value:.3g}"
    return str(value)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def best_epoch(run: TrainingRun) -> int | None:
    """The epoch whose weights the model kept: the run's own record, else the lowest validation loss."""
    if run.metrics.get("best_epoch"):
        return int(run.metrics["best_epoch"])
    for key in ("val_loss", "loss"):
        rows = [row for row in run.history if isinstance(row.get(key), int | float) and math.isfinite(row[key])]
        if rows:
            return int(min(rows, key=lambda row: row[key])["epoch"])
    return None


def held_out_accuracy(run: TrainingRun) -> dict | None:
    """The accuracy on images the model never trained on: the test split first, then validation."""
    for split in ("test", "validation"):
        report = run.evaluation.get(split) or {}
        if report.get("count") and report.get("accuracy") is not None:
            return {"percent": f"{report['accuracy']:.1%}", "on": f"{report['count']} {split} images"}
    if run.metrics.get("val_accuracy") is not None:
        count = run.metrics.get("validation_count")
        on = f"{count} validation images" if count else "the validation images"
        return {"percent": f"{run.metrics['val_accuracy']:.1%}", "on": on}
    if run.metrics.get("accuracy") is not None:
        return {"percent": f"{run.metrics['accuracy']:.1%}", "on": "the training images: nothing was held out"}
    return None


def run_status_text(run: TrainingRun) -> str:
    """What happened to the run, in one line under its status."""
    done = len(run.history)
    if run.status == TrainingRun.Status.QUEUED:
        return "waiting for the training process" if not done else f"waiting to continue after epoch {done}"
    if run.status == TrainingRun.Status.RUNNING:
        return f"epoch {run.epoch} of {run.epochs}"
    if run.status == TrainingRun.Status.SUCCEEDED:
        if run.imported:
            return "model imported"
        if run.metrics.get("stopped_early"):
            return f"stopped early after {done} of {run.epochs} epochs: no more improvement"
        return f"{done} of {run.epochs} epochs"
    kept = f"{done} of {run.epochs} epochs completed" if done else "no epoch completed"
    if run.status == TrainingRun.Status.CANCELLED:
        return f"cancelled by a person; {kept}"
    if run.interrupted:
        return f"its process stopped; {kept}"
    return kept


def run_headline(run: TrainingRun) -> dict:
    """The facts at the top of the run page."""
    seconds = run.duration_seconds
    if seconds is None and run.started_at and run.is_active:
        seconds = (timezone.now() - run.started_at).total_seconds()
    best = best_epoch(run)
    return {
        "status_text": run_status_text(run),
        "best_epoch": best,
        "accuracy": held_out_accuracy(run),
        "duration": duration_text(seconds),
        "duration_so_far": run.is_active and run.started_at is not None,
    }


def head_text(head: dict) -> str:
    """How the pretrained head was fitted, in words."""
    folds = head.get("folds")
    how = f"chosen by {folds}-fold cross-validation" if folds else "the middle of the grid (too few images to fold)"
    return (
        f"{head.get('method', 'linear probe')}: L2 strength C = {head.get('l2_c'):g}, {how}, in {head.get('seconds')} s"
    )


def calibration_text(calibration: dict) -> str:
    """The temperature and the expected calibration error before and after, in words."""
    if calibration.get("note"):
        return calibration["note"]
    text = f"temperature {calibration['temperature']:g}, fitted on {calibration['fitted_on']}"
    if calibration.get("ece_before") is not None:
        text += (
            f"; expected calibration error {calibration['ece_before']:.1%} before, {calibration['ece_after']:.1%} "
            f"after, on {calibration['measured_on']}"
        )
    return text


def automatic_text(automatic: dict) -> str:
    """What the Automatic starting point tried, each candidate's score and time, and why the winner won."""
    parts = []
    for candidate in automatic.get("candidates", []):
        if not candidate.get("tried"):
            parts.append(f"{candidate['name']}: not tried ({candidate.get('note', '')})")
            continue
        score = candidate.get("val_accuracy")
        shown = f"validation accuracy {score:.1%}" if score is not None else "no validation images"
        folds = candidate.get("cross_validation")
        if folds:
            shown = (
                f"mean accuracy {folds['mean']:.1%} ± {folds['spread']:.1%} over {folds['folds']} fold(s) "
                f"(scored in {folds['seconds']:g} s), {shown} on the run's own split"
            )
        mark = " — the winner" if candidate.get("winner") else ""
        parts.append(f"{candidate['name']}: {shown} in {candidate['seconds']} s{mark}")
    measure = f" Compared by {automatic['measure']}." if automatic.get("measure") else ""
    return (
        f"{automatic.get('winner')} won: {automatic.get('reason')}.{measure} "
        f"Tried within {automatic.get('budget_seconds'):g} s "
        f"({automatic.get('seconds')} s used): " + "; ".join(parts) + "."
    )


def phases_text(phases: dict) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())


# Final metrics that are not numbers: each told in words by its function.
METRIC_TEXTS = {
    "head": head_text,
    "calibration": calibration_text,
    "automatic": automatic_text,
    "phases": phases_text,
}
METRIC_NAMES |= {
    "automatic": "automatic starting point",
    "head": "the head",
    "fine_tune_note": "fine-tuning",
    "calibration": "confidence calibration",
    "phases": "time per phase",
}


def metric_rows(metrics: dict) -> list[tuple[str, str]]:
    """The final metrics as (what it is, its value) in words."""
    order = list(METRIC_NAMES)
    keys = sorted(metrics, key=lambda key: order.index(key) if key in order else len(order))
    rows = []
    for key in keys:
        value = metrics[key]
        text = METRIC_TEXTS[key](value) if key in METRIC_TEXTS and isinstance(value, dict) else number_text(key, value)
        rows.append((METRIC_NAMES.get(key, key.replace("_", " ")), text))
    return rows


def history_table(history: list[dict], best: int | None) -> dict:
    """The history as columns named in words and rows of formatted values, the best epoch marked."""
    keys = []
    for row in history:
        keys += [key for key in row if key not in keys]
    order = list(HISTORY_NAMES)
    keys.sort(key=lambda key: order.index(key) if key in order else len(order))
    rows = [
        {
            "best": row.get("epoch") == best,
            "values": [number_text(key, row[key]) if key in row else "" for key in keys],
        }
        for row in history
    ]
    return {"columns": [HISTORY_NAMES.get(key, key.replace("_", " ")) for key in keys], "rows": rows}
