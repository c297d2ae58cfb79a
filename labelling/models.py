"""Suggested labels for unlabelled images, and the job that makes them (kind "suggestions").

Models of the Django app "management" (app_label; imported in management/models.py).
"""

from django.db import models

from jobs.models import Job


class Suggestion(models.Model):
    """The current model's answer for one unlabelled image, kept until the model changes (once the image
    is labelled, to say whether the model was right): written by the job of kind "suggestions", read least
    sure first (smallest margin)."""

    item = models.OneToOneField("management.DataSetItem", on_delete=models.CASCADE, related_name="suggestion")
    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="suggestions")
    run = models.ForeignKey(
        "management.TrainingRun", on_delete=models.CASCADE, related_name="+", help_text="The model asked."
    )
    label = models.CharField(max_length=100, help_text="The predicted label.")
    confidence = models.FloatField(help_text="The predicted label's probability.")
    margin = models.FloatField(help_text="The top probability minus the second: small means unsure.")
    top = models.JSONField(default=list, help_text="The most probable labels: [[label, probability], …].")
    created_at = models.DateTimeField(auto_now_add=True)
    labelled_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a person labelled the image; the suggestion is kept to say whether the model was right.",
    )

    class Meta:
        app_label = "management"
        ordering = ["dataset", "margin", "item"]
        indexes = [
            models.Index(fields=["dataset", "margin", "item"]),
            models.Index(fields=["dataset", "label", "margin"]),
            models.Index(fields=["run", "labelled_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.confidence:.0%}) for item {self.item_id}"


class SuggestionJob(Job):
    """Predicting every unlabelled image of a dataset with its current model (a job of kind "suggestions")."""

    KIND = "suggestions"

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="suggestion_jobs")
    run = models.ForeignKey(
        "management.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    report = models.JSONField(default=dict, blank=True, help_text="How many images were predicted, skipped and why.")

    class Meta(Job.Meta):
        app_label = "management"
        verbose_name = "suggestions job"

    def __str__(self) -> str:
        return f"Suggestions {self.pk} for {self.dataset}"
