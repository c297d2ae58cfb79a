"""The promotion policy: whether a finished run is at least as good as the current model, and why.

Reads runs, writes nothing: the lifecycle (runs.py) asks `promotion_decide` when a run succeeds and
stores the answer on the run with its status. The comparison (compare.py) reads `same_held_out_split`.
"""

from __future__ import annotations

from management.options import PromotionPolicy
from training.models import TrainingRun

# The held-out splits, the most trustworthy first: the test images never chose an epoch.
HELD_OUT = ("test", "validation")


def held_out_report(evaluation: dict | None) -> tuple[str, dict] | None:
    """A run's own held-out measure: its test report if it has one, else its validation report."""
    for name in HELD_OUT:
        report = (evaluation or {}).get(name) or {}
        if report.get("count") and report.get("accuracy") is not None:
            return name, report
    return None


def same_held_out_split(first: tuple[dict, dict], second: tuple[dict, dict]) -> str | None:
    """The split (test, else validation) both runs evaluated on the same images, from (splits, evaluation)
    pairs; None when their held-out images differ (a relabelling, new images, another seed or split)."""
    for name in HELD_OUT:
        ids = [sorted((splits or {}).get(name) or []) for splits, _ in (first, second)]
        counts = [((evaluation or {}).get(name) or {}).get("count") for _, evaluation in (first, second)]
        if ids[0] and ids[0] == ids[1] and all(counts):
            return name
    return None


def _shown(value: float, other: float) -> str:
    """Three decimals, more when three would show two different values as equal."""
    text = f"{value:.3f}"
    return f"{value:.6f}" if text == f"{other:.3f}" and value != other else text


def promotion_decide(*, evaluation: dict, splits: dict, current: TrainingRun | None, policy: str) -> dict:
    """Whether a run that finished with `evaluation` and `splits` becomes current instead of `current`.

    `when_better`: only when its accuracy is at least the current model's, on the same held-out images
    when both were evaluated on them or when the training process scored the current model on this
    run's (`current_model` in its held-out report), else each on its own held-out images (said in the
    reason). A run
    without a held-out measure, or a current model without one, cannot be compared: promoted, and why.
    `always`: promoted; the comparison is still recorded.
    """
    decision = {"promoted": True, "policy": policy, "measure": None, "same_images": False}
    decision |= {"candidate": None, "current": None, "current_run": current.pk if current else None}
    if current is None:
        return decision | {"reason": "the dataset had no model yet: promoted"}

    ours = held_out_report(evaluation)
    theirs = held_out_report(current.evaluation)
    same = same_held_out_split((splits, evaluation), (current.splits, current.evaluation))
    rescored = same is None and ours is not None and (ours[1].get("current_model") or {}).get("run") == current.pk
    if same is not None:
        ours, theirs = (same, evaluation[same]), (same, current.evaluation[same])
    elif rescored:
        # The training process scored the current model on this run's held-out images (trainer.py).
        same, theirs = ours[0], (ours[0], ours[1]["current_model"])
    elif ours is None or theirs is None:
        whose = "this run" if ours is None else f"the current model (run {current.pk})"
        why = "it was imported" if theirs is None and current.imported else "its validation split was 0"
        reason = f"{whose} has no held-out measure ({why}): promoted without a comparison"
        if policy == PromotionPolicy.ALWAYS:
            reason = f"policy 'always': promoted ({whose} has no held-out measure)"
        return decision | {"reason": reason}

    (our_split, our_report), (their_split, their_report) = ours, theirs
    candidate, incumbent = float(our_report["accuracy"]), float(their_report["accuracy"])
    measure = f"{our_split} accuracy"
    against = "current" if our_split == their_split else f"current's {their_split} accuracy"
    comparison = f"{measure} {_shown(candidate, incumbent)}"
    comparison += f" {'≥' if candidate >= incumbent else '<'} {against} {_shown(incumbent, candidate)}"
    if rescored:
        basis = f"on the same {our_report['count']} {same} images: run {current.pk}'s model scored on this run's"
    elif same is not None:
        basis = f"on the same {our_report['count']} {same} images as run {current.pk}"
    else:
        basis = f"each run on its own held-out images: they differ from run {current.pk}'s"
    decision |= {"measure": measure, "same_images": same is not None, "candidate": candidate, "current": incumbent}
    if policy == PromotionPolicy.ALWAYS:
        return decision | {"reason": f"policy 'always': promoted ({comparison}, {basis})"}
    if candidate >= incumbent:
        return decision | {"reason": f"{comparison} ({basis}): promoted"}
    return decision | {"promoted": False, "reason": f"{comparison} ({basis}): kept as a version, not promoted"}
