"""The making of a version's exports (a job of kind "export").

A model of the Django app "management" (app_label; imported in management/models.py).
"""

from django.db import models

from jobs.models import Job


class ExportJob(Job):
    """The making of one export of a version (a job of kind "export"): its file lands in `run.exports`."""

    KIND = "export"

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="export_jobs")
    run = models.ForeignKey("management.TrainingRun", on_delete=models.CASCADE, related_name="export_jobs")
    format = models.CharField(max_length=20)
    precision = models.CharField(max_length=10, default="float32")
    bundle = models.BooleanField(default=False, help_text="A zip of the model, labels.json and a README.")

    class Meta(Job.Meta):
        app_label = "management"
        verbose_name = "export"

    def __str__(self) -> str:
        return f"Export {self.pk} of run {self.run_id} ({self.format})"
