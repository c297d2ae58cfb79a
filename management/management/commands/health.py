"""Check a dataset's health in the foreground, or execute a queued health check: a thin shell over the
health job kind (`manage.py job health ID` is what the runners start)."""

import json as json_module

from django.core.management.base import BaseCommand, CommandError

from datasets.models import DataSet
from health import services as health
from health.models import HealthCheck
from jobs.process import NotRunnable, job_execute
from management.errors import ServiceError


class Command(BaseCommand):
    help = "Check DATASET_ID's health now and print the report's summary, or execute queued check --check ID."

    def add_arguments(self, parser):
        parser.add_argument("dataset_id", nargs="?", type=int, help="the dataset to check now")
        parser.add_argument("--check", type=int, dest="check_id", help="execute this queued health check")
        parser.add_argument("--json", action="store_true", help="print the whole report as JSON")

    def handle(self, *args, dataset_id=None, check_id=None, json: bool = False, **options):
        if (dataset_id is None) == (check_id is None):
            raise CommandError("give either a dataset id or --check CHECK_ID")
        if dataset_id is not None:
            dataset = DataSet.objects.filter(pk=dataset_id).first()
            if dataset is None:
                raise CommandError(f"dataset {dataset_id} does not exist")
            try:
                check, created = health.health_check_start(dataset=dataset, enqueue=False)
            except ServiceError as error:
                raise CommandError(error.message) from None
            if not created:
                raise CommandError(f"health check {check.pk} of this dataset is already {check.status}")
            check_id = check.pk
        # Keras and cleanlab load in the job's code, in this process, never in the web server's.
        try:
            check = job_execute(kind=HealthCheck.KIND, job_id=check_id)
        except NotRunnable as error:
            raise CommandError(str(error)) from None
        if check.status != HealthCheck.Status.SUCCEEDED:
            raise CommandError(f"health check {check.pk} {check.status}: {check.error or 'no error recorded'}")
        report = check.report
        if json:
            self.stdout.write(_json(report))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"health check {check.pk} done in {report['seconds']['total']} s ({report['method']}): "
                f"{len(report['label_issues'])} suspected label errors, {len(report['duplicates'])} duplicate groups, "
                f"{len(report['leaks']['groups'])} leaking, {len(report['outliers'])} outliers"
            )
        )
        for note in report["balance"]["notes"]:
            self.stdout.write(f"- {note}")


def _json(report: dict) -> str:
    return json_module.dumps(report, indent=2)
