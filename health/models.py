"""Health checks of a dataset (a job of kind "health") and the findings a person kept as they are.

Models of the Django app "management" (app_label; imported in management/models.py).
"""

from django.conf import settings
from django.db import models

from jobs.models import Job


class HealthCheck(Job):
    """One check of a dataset's health (label errors, duplicates, outliers, balance): a job of kind "health"."""

    KIND = "health"

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="health_checks")
    report = models.JSONField(default=dict, blank=True)
    # Per-image (60,000 scores at 60,000 images, 1 MB of JSON): out of the report that every view of the
    # health page and answer parses, read by what ranks every image (bench/health.py).
    label_quality = models.JSONField(
        default=dict, blank=True, help_text="Each image's label quality score (low: likely mislabelled), by item id."
    )

    class Meta(Job.Meta):
        app_label = "management"
        verbose_name = "health check"

    def __str__(self) -> str:
        return f"Health check {self.pk} of {self.dataset}"

    @property
    def phase_title(self) -> str:
        """The phase as the page says it (health.js says the same from the API's `phase`)."""
        return HEALTH_PHASE_TITLES.get(self.phase, self.phase)


# What each phase of health/job.py does, in words (kept in step with health.js).
HEALTH_PHASE_TITLES = {
    "hashing": "looking for duplicates",
    "decoding": "reading the images",
    "features": "computing what each image looks like",
    "labels": "checking the labels",
    "report": "writing the report",
}


class HealthDismissal(models.Model):
    """A finding about an item a person kept as it is: later checks and the page do not list it again."""

    class Kind(models.TextChoices):
        LABEL = "label", "Suspected label error"
        DUPLICATE = "duplicate", "Duplicate"
        OUTLIER = "outlier", "Outlier"

    item = models.ForeignKey("management.DataSetItem", on_delete=models.CASCADE, related_name="health_dismissals")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "management"
        constraints = [models.UniqueConstraint(fields=["item", "kind"], name="one_dismissal_per_item_and_kind")]
