"""Train a dataset in the foreground, or execute a queued run: a thin shell over the training job kind
(`manage.py job training ID` is what the runners start)."""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets.models import DataSet
from jobs import lifecycle
from jobs.process import NotRunnable, job_execute
from management.errors import ServiceError
from training import runs
from training import services as training
from training.models import TrainingRun


class _Tee:
    """Writes to the console and to the run's log file at once."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False

    def close(self):
        # Loggers that captured the stream at import may close it at exit; the files are ours.
        pass


class Command(BaseCommand):
    help = (
        "Train DATASET_ID in the foreground, printing progress; resume a cancelled or interrupted run "
        "with --resume ID; or execute queued run --run ID."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset_id", nargs="?", type=int, help="the dataset to train now")
        parser.add_argument("--run", type=int, dest="run_id", help="execute this queued training run")
        parser.add_argument(
            "--resume",
            type=int,
            dest="resume_id",
            help="continue this cancelled or interrupted run from its last epoch",
        )

    def handle(self, *args, dataset_id=None, run_id=None, resume_id=None, **options):
        if sum(value is not None for value in (dataset_id, run_id, resume_id)) != 1:
            raise CommandError("give either a dataset id, --run RUN_ID or --resume RUN_ID")
        if run_id is not None:
            run = TrainingRun.objects.filter(pk=run_id).first()
            if run is None:
                raise CommandError(f"training run {run_id} does not exist")
            # Started by a runner, standard output already is the run's log file.
            run = self._execute(run) if run.log_file else self._execute_with_log(run)
        else:
            run = self._resumed_run(resume_id) if resume_id is not None else self._new_run(dataset_id)
            run = self._execute_with_log(run)

        if run.status == TrainingRun.Status.SUCCEEDED:
            accuracy = run.accuracy
            shown = f", accuracy {accuracy:.3f}" if accuracy is not None else ""
            self.stdout.write(self.style.SUCCESS(f"run {run.pk} succeeded{shown}: {run.model_file.name}"))
            if run.promotion:
                self.stdout.write(f"run {run.pk}: {run.promotion['reason']}")
            return
        raise CommandError(f"run {run.pk} {run.status}: {run.error or 'no error recorded'}")

    def _new_run(self, dataset_id: int) -> TrainingRun:
        try:
            dataset = DataSet.objects.get(pk=dataset_id)
        except DataSet.DoesNotExist:
            raise CommandError(f"dataset {dataset_id} does not exist") from None
        try:
            run = training.training_run_create(dataset=dataset, enqueue=False)
        except ServiceError as error:
            raise CommandError(error.message) from None
        return runs.run_claim(run_id=run.pk, worker=runs.this_worker())

    def _resumed_run(self, run_id: int) -> TrainingRun:
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"training run {run_id} does not exist")
        try:
            with transaction.atomic():
                training.training_run_resume(run=run, enqueue=False)
        except ServiceError as error:
            raise CommandError(error.message) from None
        claimed = runs.run_claim(run_id=run.pk, worker=runs.this_worker())
        if claimed is None:
            raise CommandError(f"training run {run_id} was taken by another process")
        return claimed

    def _execute_with_log(self, run: TrainingRun) -> TrainingRun:
        log_path = runs.run_log_path(run=run)
        stdout, stderr = sys.stdout, sys.stderr
        with log_path.open("a", encoding="utf-8") as log:
            sys.stdout, sys.stderr = _Tee(stdout, log), _Tee(stderr, log)
            try:
                return self._execute(run)
            finally:
                sys.stdout, sys.stderr = stdout, stderr
                log.close()
                # With a bucket, the log written here goes there (on this disk it is already kept).
                lifecycle.job_log_keep(kind=TrainingRun.KIND, job_id=run.pk)

    def _execute(self, run: TrainingRun) -> TrainingRun:
        try:
            return job_execute(kind=TrainingRun.KIND, job_id=run.pk)
        except NotRunnable as error:
            raise CommandError(str(error)) from None
