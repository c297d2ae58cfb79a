"""Run one job of any kind in this process: what the runners start (`manage.py job KIND ID`)."""

from django.core.management.base import BaseCommand, CommandError

from jobs.process import NotRunnable, job_execute
from jobs.registry import KINDS


class Command(BaseCommand):
    help = "Run queued (or claimed) job ID of KIND in this process: training, health, export or import."
    # The web process that queued the job ran Django's system checks; running them again in every job's
    # process cost 0.4 s (2 s on a loaded machine) before any work, a third of a 5,000-image import.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=list(KINDS))
        parser.add_argument("job_id", type=int)

    def handle(self, *args, kind: str, job_id: int, **options):
        try:
            job = job_execute(kind=kind, job_id=job_id)
        except NotRunnable as error:
            # Before any heavy import: a job handed over twice costs nothing the second time.
            raise CommandError(str(error)) from None
        if job.status != job.Status.SUCCEEDED:
            raise CommandError(f"{kind} job {job.pk} {job.status}: {job.error or 'no error recorded'}")
        self.stdout.write(self.style.SUCCESS(f"{kind} job {job.pk} succeeded"))
