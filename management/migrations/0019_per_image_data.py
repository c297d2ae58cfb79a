"""Issue 24: a run's per-image data (split item ids, evaluated images' predictions) in a table of its own,
and a health check's per-image label quality scores out of its report."""

import django.db.models.deletion
from django.db import migrations, models


def per_image_out(apps, schema_editor):
    """Each run's split item ids and per-image predictions move into its RunData row."""
    TrainingRun = apps.get_model("management", "TrainingRun")
    RunData = apps.get_model("management", "RunData")
    for pk, splits, evaluation in TrainingRun.objects.values_list("pk", "splits", "evaluation").iterator(chunk_size=20):
        summary, predictions = {}, {}
        for name, report in (evaluation or {}).items():
            if isinstance(report, dict) and "predictions" in report:
                report = dict(report)
                predictions[name] = report.pop("predictions")
                report["predictions_stored"] = bool(predictions[name])
            summary[name] = report
        if splits or predictions:
            RunData.objects.create(run_id=pk, splits=splits or {}, predictions=predictions)
        if summary != (evaluation or {}):
            TrainingRun.objects.filter(pk=pk).update(evaluation=summary)


def per_image_back(apps, schema_editor):
    TrainingRun = apps.get_model("management", "TrainingRun")
    RunData = apps.get_model("management", "RunData")
    for data in RunData.objects.iterator(chunk_size=20):
        evaluation = TrainingRun.objects.filter(pk=data.run_id).values_list("evaluation", flat=True).first() or {}
        for name, rows in data.predictions.items():
            report = {key: value for key, value in evaluation.get(name, {}).items() if key != "predictions_stored"}
            evaluation[name] = {**report, "predictions": rows}
        TrainingRun.objects.filter(pk=data.run_id).update(splits=data.splits, evaluation=evaluation)


def quality_out(apps, schema_editor):
    HealthCheck = apps.get_model("management", "HealthCheck")
    for check in HealthCheck.objects.iterator(chunk_size=20):
        if "label_quality" in (check.report or {}):
            check.label_quality = check.report.pop("label_quality")
            check.save(update_fields=["report", "label_quality"])


def quality_back(apps, schema_editor):
    HealthCheck = apps.get_model("management", "HealthCheck")
    for check in HealthCheck.objects.exclude(label_quality={}).iterator(chunk_size=20):
        check.report = {**(check.report or {}), "label_quality": check.label_quality}
        check.save(update_fields=["report"])


class Migration(migrations.Migration):
    dependencies = [
        ("management", "0018_suggestion_labelled_at"),
    ]

    operations = [
        migrations.CreateModel(
            name="RunData",
            fields=[
                (
                    "run",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="per_image",
                        serialize=False,
                        to="management.trainingrun",
                    ),
                ),
                (
                    "splits",
                    models.JSONField(
                        blank=True, default=dict, help_text="The item ids of each split: train, validation, test."
                    ),
                ),
                (
                    "predictions",
                    models.JSONField(
                        blank=True,
                        default=dict,
                        help_text="Each evaluated split's predictions: [item, predicted label index, confidence] rows.",
                    ),
                ),
            ],
            options={
                "verbose_name": "run's per-image data",
                "verbose_name_plural": "runs' per-image data",
            },
        ),
        migrations.RunPython(per_image_out, per_image_back, elidable=False),
        migrations.RemoveField(
            model_name="trainingrun",
            name="splits",
        ),
        migrations.AddField(
            model_name="healthcheck",
            name="label_quality",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Each image's label quality score (low: likely mislabelled), by item id.",
            ),
        ),
        migrations.RunPython(quality_out, quality_back, elidable=False),
        migrations.AlterField(
            model_name="trainingrun",
            name="evaluation",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Each evaluated split's report without its per-image predictions (those are in RunData).",
            ),
        ),
    ]
