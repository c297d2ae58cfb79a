"""Counts kept as data: images per dataset and label (LabelCount), images per split of a run
(TrainingRun.split_counts), both counted once here from what exists."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count


def count_labels(apps) -> None:
    """Images per dataset and label, counted from the items (also what the label counts test calls)."""
    DataSetItem = apps.get_model("management", "DataSetItem")
    LabelCount = apps.get_model("management", "LabelCount")
    rows = DataSetItem.objects.order_by().values("dataset_id", "label").annotate(count=Count("id"))
    LabelCount.objects.bulk_create(
        [LabelCount(dataset_id=row["dataset_id"], label=row["label"], count=row["count"]) for row in rows],
        batch_size=1000,
    )


def count_what_exists(apps, schema_editor):
    count_labels(apps)
    TrainingRun = apps.get_model("management", "TrainingRun")
    for run in TrainingRun.objects.only("id", "splits").iterator(chunk_size=50):
        counts = {name: len(ids) for name, ids in (run.splits or {}).items()}
        TrainingRun.objects.filter(pk=run.pk).update(split_counts=counts)


class Migration(migrations.Migration):
    dependencies = [
        ("management", "0014_jobs"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="split_counts",
            field=models.JSONField(
                blank=True, default=dict, help_text="The number of images of each split (what lists show of `splits`)."
            ),
        ),
        migrations.CreateModel(
            name="LabelCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("label", models.CharField(max_length=100)),
                ("count", models.PositiveIntegerField(default=0)),
                (
                    "dataset",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="label_counts",
                        to="management.dataset",
                    ),
                ),
            ],
            options={
                "ordering": ["dataset", "label"],
                "constraints": [
                    models.UniqueConstraint(fields=("dataset", "label"), name="one_count_per_dataset_and_label")
                ],
            },
        ),
        migrations.RunPython(count_what_exists, migrations.RunPython.noop),
    ]
