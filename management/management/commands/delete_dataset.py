"""Delete a dataset in the foreground, or finish a deletion that failed: a thin shell over the deletion
job kind (`manage.py job deletion ID` is what the runners start)."""

from django.core.management.base import BaseCommand, CommandError

from datasets.models import DataSet, DataSetDeletion
from datasets.services import dataset_delete, dataset_deletion_retry
from jobs.process import NotRunnable, job_execute
from management.errors import ServiceError


class Command(BaseCommand):
    help = "Delete DATASET_ID now (its images, runs and files), or run again a deletion that failed."

    def add_arguments(self, parser):
        parser.add_argument("dataset_id", type=int)

    def handle(self, *args, dataset_id: int, **options):
        dataset = DataSet.all_objects.filter(pk=dataset_id).first()
        if dataset is None:
            raise CommandError(f"dataset {dataset_id} does not exist")
        try:
            if dataset.deleting:
                # Marked already: its deletion failed (or is under way: then this says so).
                job = dataset_deletion_retry(dataset_id=dataset_id)
            else:
                job = dataset_delete(dataset=dataset)
        except ServiceError as error:
            raise CommandError(error.message) from None
        try:
            job = job_execute(kind=DataSetDeletion.KIND, job_id=job.pk)
        except NotRunnable as error:
            raise CommandError(str(error)) from None
        if job.status != DataSetDeletion.Status.SUCCEEDED:
            raise CommandError(f"deletion {job.pk} {job.status}: {job.error or 'no error recorded'}")
        self.stdout.write(
            self.style.SUCCESS(f"dataset {dataset_id} ('{job.dataset_name}') deleted: {job.images_deleted} images")
        )
