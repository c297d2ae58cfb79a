"""The run page tells the few-shot facts in words: the head's fit, calibration, Automatic's choice, phases."""

from training.run_report import metric_rows


def test_automatic_says_what_was_tried_each_score_and_time_and_why_the_winner_won():
    automatic = {
        "budget_seconds": 30.0,
        "seconds": 21.4,
        "winner": "EfficientNet-Lite0, head only",
        "reason": "best validation accuracy (95.0%), ahead of model code, from scratch (70.0%)",
        "candidates": [
            {
                "name": "EfficientNet-Lite0, head only",
                "tried": True,
                "val_accuracy": 0.95,
                "seconds": 8.2,
                "winner": True,
            },
            {"name": "model code, from scratch", "tried": True, "val_accuracy": 0.7, "seconds": 13.1},
            {"name": "EfficientNet-Lite0, fine-tuned", "tried": False, "note": "9 s of the 30 s budget left"},
        ],
    }
    rows = dict(metric_rows({"automatic": automatic}))

    assert rows["automatic starting point"] == (
        "EfficientNet-Lite0, head only won: best validation accuracy (95.0%), ahead of model code, from scratch "
        "(70.0%). Tried within 30 s (21.4 s used): EfficientNet-Lite0, head only: validation accuracy 95.0% in "
        "8.2 s — the winner; model code, from scratch: validation accuracy 70.0% in 13.1 s; EfficientNet-Lite0, "
        "fine-tuned: not tried (9 s of the 30 s budget left)."
    )


def test_calibration_the_head_and_the_phases_are_told_in_words():
    metrics = {
        "calibration": {
            "temperature": 1.8,
            "fitted_on": "40 validation images",
            "measured_on": "100 test images",
            "ece_before": 0.123,
            "ece_after": 0.031,
        },
        "head": {"method": "linear probe (L-BFGS)", "l2_c": 0.03, "folds": 4, "seconds": 0.4},
        "phases": {"training": 3.21, "exporting": 4.0},
        "fine_tune_note": "Fine-tuning did not beat the head alone.",
    }
    rows = dict(metric_rows(metrics))

    assert rows["confidence calibration"] == (
        "temperature 1.8, fitted on 40 validation images; expected calibration error 12.3% before, 3.1% after, "
        "on 100 test images"
    )
    assert rows["the head"] == (
        "linear probe (L-BFGS): L2 strength C = 0.03, chosen by 4-fold cross-validation, in 0.4 s"
    )
    assert rows["time per phase"] == "training 3.2 s, exporting 4.0 s"
    assert rows["fine-tuning"] == "Fine-tuning did not beat the head alone."


def test_automatic_by_cross_validation_shows_each_candidates_mean_spread_folds_and_the_measure():
    automatic = {
        "budget_seconds": 180.0,
        "seconds": 40.0,
        "winner": "EfficientNet-Lite0, head only",
        "reason": "best mean accuracy on the 3 fold(s) every candidate was scored on: 95.0% against model code's 70.0%",
        "measure": "repeated stratified cross-validation",
        "candidates": [
            {
                "name": "EfficientNet-Lite0, head only",
                "tried": True,
                "val_accuracy": 1.0,
                "seconds": 8.2,
                "winner": True,
                "cross_validation": {"mean": 0.955, "spread": 0.031, "folds": 11, "seconds": 0.8},
            },
        ],
    }
    text = dict(metric_rows({"automatic": automatic}))["automatic starting point"]

    assert "Compared by repeated stratified cross-validation." in text
    assert (
        "EfficientNet-Lite0, head only: mean accuracy 95.5% ± 3.1% over 11 fold(s) (scored in 0.8 s), "
        "validation accuracy 100.0% on the run's own split in 8.2 s — the winner" in text
    )
