"""Make (and check) a version's exports ahead of the first download, or make a refused one again."""

from django.core.management.base import BaseCommand, CommandError

from management.errors import ServiceError
from ml.export import FORMATS
from serving.exports import export_key, training_run_export, training_run_export_again
from training.models import TrainingRun


class Command(BaseCommand):
    help = "Export run RUN's model to FORMAT (or all), checked against Keras in its own runtime, and keep it."

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, required=True, dest="run_id")
        parser.add_argument("--format", default="all", choices=[*FORMATS, "all"])
        parser.add_argument("--precision", default="float32", choices=["float32", "float16"])
        parser.add_argument("--again", action="store_true", help="forget an earlier (refused) export first")

    def handle(self, *args, run_id, format, precision, again, **options):
        run = TrainingRun.objects.select_related("dataset").filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"there is no training run with id {run_id}")
        failed = 0
        for name in FORMATS if format == "all" else [format]:
            if again and name != "keras":
                training_run_export_again(run=run, format=name, precision=precision)
            try:
                training_run_export(run=run, format=name, precision=precision)
            except ServiceError as error:
                failed += 1
                self.stderr.write(f"{name}: refused: {error.message}")
                continue
            record = run.exports[export_key(name, precision)]
            self.stdout.write(
                f"{name}: ok, largest difference {record['max_difference']:.3g} "
                f"({record.get('runtime')}, {record.get('size', 0)} bytes, {record.get('seconds', 0)} s)"
            )
        if failed:
            raise CommandError(f"{failed} export(s) refused")
