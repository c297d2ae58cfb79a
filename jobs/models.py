"""The abstract model every job kind's model extends: status, phase, progress 0–1, worker, heartbeat,
error, log and timestamps, and at most one active job of a kind per dataset.

Abstract only: the concrete models live in the `management` app (its migrations hold their history).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class Job(models.Model):
    """A long task run in its own process; its status changes only through jobs/lifecycle.py."""

    Status = JobStatus
    ACTIVE = ACTIVE_STATUSES

    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    phase = models.CharField(max_length=40, blank=True)
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    error = models.TextField(blank=True)
    worker = models.CharField(
        max_length=200,
        blank=True,
        help_text="Whose process runs it: host and process id (thread runner), or Celery node and process id.",
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="The last sign of life of its process (the database's clock)."
    )
    log_file = models.FileField(upload_to="logs", max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]
        constraints = [
            # The concrete model has a `dataset` foreign key.
            models.UniqueConstraint(
                fields=["dataset"],
                condition=models.Q(status__in=["queued", "running"]),
                name="%(class)s_one_active_per_dataset",
            ),
            models.CheckConstraint(
                condition=models.Q(progress__gte=0) & models.Q(progress__lte=1),
                name="%(class)s_progress_between_0_and_1",
            ),
        ]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def percent(self) -> float:
        """The progress as a percentage, for pages and the runs' API (which has always said 0 to 100)."""
        return round(self.progress * 100, 2)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
