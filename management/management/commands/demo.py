"""Create the demo dataset (generated circles, squares and triangles), or write it as a zip."""

import io
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from ml.shapes import SHAPES, demo_zip

DEMO_NAME = "Shapes (demo)"


class Command(BaseCommand):
    help = "Create the demo dataset of generated shapes, or write them to a zip with --zip FILE."

    def add_arguments(self, parser):
        parser.add_argument("--per-label", type=int, default=200, help="images per shape (default 200)")
        parser.add_argument("--size", type=int, default=64, help="image width and height in pixels")
        parser.add_argument("--zip", dest="zip_path", help="write a zip (one folder per shape) instead")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, per_label, size, zip_path, seed, **options):
        if per_label < 2 or not 8 <= size <= 1024:
            raise CommandError("--per-label must be at least 2 and --size between 8 and 1024")
        data = demo_zip(per_label=per_label, size=size, seed=seed)
        if zip_path:
            Path(zip_path).write_bytes(data)
            self.stdout.write(f"wrote {zip_path}: {per_label} images in each of {', '.join(SHAPES)}")
            return
        if DataSet.objects.filter(name=DEMO_NAME).exists():
            self.stdout.write(f"the dataset '{DEMO_NAME}' already exists; nothing to do")
            return
        with transaction.atomic():
            dataset = DataSet.objects.create(name=DEMO_NAME, epochs=15, image_size=size)
            report = dataset_import_zip(dataset=dataset, file=io.BytesIO(data))
        self.stdout.write(
            self.style.SUCCESS(f"created dataset {dataset.pk} '{DEMO_NAME}' with {report.added} images {report.counts}")
        )
