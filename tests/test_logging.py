"""Logs say when, how bad and who: every record with its time, level and logger, the training process's too."""

import logging
import re

from management.models import DataSet
from management.services import runs, trainer, training

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def test_a_record_is_written_with_its_time_level_and_logger(capsys):
    logging.getLogger("management.runners").warning("the runner noticed something")
    err = capsys.readouterr().err
    assert re.search(rf"^{STAMP} WARNING management.runners: the runner noticed something$", err, re.M)


def test_the_training_process_tells_its_run_through_the_run_log_with_times(db, capsys):
    run = training.training_run_create(dataset=DataSet.objects.create(name="Nothing to train"), enqueue=False)
    run = trainer.training_run_execute(run=runs.run_claim(run_id=run.pk, worker="here:1"))
    out = capsys.readouterr().out
    assert run.status == "failed"
    assert re.search(rf"^{STAMP} INFO kerasui.run: Run {run.pk} failed: the dataset has no images", out, re.M)
