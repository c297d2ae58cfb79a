"""Logs say when, how bad and who: every record with its time, level and logger, the training process's too."""

import logging
import re
import sys

from datasets.models import DataSet
from training import runs, trainer
from training import services as training

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def test_a_record_is_written_with_its_time_level_and_logger(capsys):
    logging.getLogger("jobs.runner").warning("the runner noticed something")
    err = capsys.readouterr().err
    assert re.search(rf"^{STAMP} WARNING jobs.runner: the runner noticed something$", err, re.M)


def test_the_training_process_tells_its_run_through_the_run_log_with_times(db, capsys):
    run = training.training_run_create(dataset=DataSet.objects.create(name="Nothing to train"), enqueue=False)
    run = trainer.training_run_execute(run=runs.run_claim(run_id=run.pk, worker="here:1"))
    out = capsys.readouterr().out
    assert run.status == "failed"
    assert re.search(rf"^{STAMP} INFO kerasui.run: Run {run.pk} failed: the dataset has no images", out, re.M)


def test_records_reach_the_real_stream_when_a_celery_worker_has_redirected_it(monkeypatch, capfd):
    # A Celery worker replaces sys.stderr by a proxy that logs what is written to it; a record sent there
    # would be logged again and dropped by Celery (its "ready." line never reached the worker's log).
    from kerasui.logs import ConsoleHandler

    class LoggingProxy:
        logger = logging.getLogger("celery.redirected")

        def write(self, text):
            raise AssertionError("written to the proxy")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", LoggingProxy())
    handler = ConsoleHandler()
    handler.emit(logging.LogRecord("kerasui.test", logging.INFO, __file__, 1, "worker ready.", None, None))
    assert "worker ready." in capfd.readouterr().err
