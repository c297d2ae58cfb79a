"""The training job kind's entry points: what `manage.py job training ID` runs, and what the thread runner
does after such a process succeeded. Keras loads only in the trainer, once there is something to train."""

from __future__ import annotations

import logging

from kerasui.logs import RUN_LOGGER
from training import runs
from training.models import TrainingRun
from training.services import training_run_problem

log = logging.getLogger(RUN_LOGGER)


def training_job_execute(*, job: TrainingRun) -> None:
    """Train a claimed run in this process. A run refused at once (no images, one label) fails in one
    line, without TensorFlow's start-up messages."""
    problem = training_run_problem(run=job)
    if problem is not None:
        log.info("Run %s failed: %s", job.pk, problem)
        runs.run_fail(run_id=job.pk, message=problem)
        return
    from training import trainer

    trainer.training_run_execute(run=job)


def training_job_after(*, job_id: int) -> None:
    """After a training process succeeded (in the runner's process): load the new model now, so this
    process's first prediction with it is not slow."""
    from serving.prediction import prediction_warm

    prediction_warm(run_id=job_id)
