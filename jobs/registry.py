"""The job kinds: what each one's model is, what its process executes, its budget and how it is lost.

A new kind of long task is a small module with an `execute(*, job)` function plus one entry here (and,
when it needs moves of its own, its extra transitions). Modules are named by dotted path, so this
registry imports none of them: the domain imports the job system, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module

from django.apps import apps


@dataclass(frozen=True)
class Kind:
    """One kind of job."""

    name: str
    model: str  # app_label.ModelName, a subclass of jobs.models.Job
    execute: str  # "module:function", called as function(job=...) in the job's own process
    noun: str  # how messages name its process: "the training process"
    budget_setting: str  # the setting: how many jobs of the kind run at once
    log_prefix: str  # its log file: logs/<prefix>_<id>.log
    lost_hint: str  # what a person can do once its process was lost
    lost_event: str = "fail"  # the move the watchdog makes for a lost one
    lost_fields: dict = field(default_factory=dict)
    transitions: dict = field(default_factory=dict)  # the kind's own moves, beside the common ones
    after_success: str = ""  # "module:function" the thread runner calls after its process succeeded

    @property
    def model_class(self):
        return apps.get_model(self.model)

    def function(self, name: str):
        module, _, attribute = getattr(self, name).partition(":")
        return getattr(import_module(module), attribute)


_QUEUED, _RUNNING, _SUCCEEDED, _FAILED, _CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in [
        Kind(
            name="training",
            model="management.TrainingRun",
            execute="training.job:training_job_execute",
            noun="training process",
            budget_setting="KERASUI_MAX_CONCURRENT_RUNS",
            log_prefix="run",
            lost_hint="Resume the run to continue from its last completed epoch, or train again.",
            lost_event="interrupt",
            lost_fields={"interrupted": True},
            transitions={
                "import": ((), _SUCCEEDED),  # a trained model uploaded as a version
                "stop": ((_CANCELLED,), _CANCELLED),  # its process stopped; completed epochs kept
                "resume": ((_CANCELLED, _FAILED), _QUEUED),  # continue from its checkpoint
                "promote": ((_SUCCEEDED,), _SUCCEEDED),  # a person makes this version current
            },
            after_success="training.job:training_job_after",
        ),
        Kind(
            name="health",
            model="management.HealthCheck",
            execute="health.job:health_job_execute",
            noun="health check's process",
            budget_setting="KERASUI_MAX_CONCURRENT_HEALTH_CHECKS",
            log_prefix="health",
            lost_hint="Check again.",
        ),
        Kind(
            name="export",
            model="management.ExportJob",
            execute="serving.exports:export_job_execute",
            noun="export's process",
            budget_setting="KERASUI_MAX_CONCURRENT_EXPORTS",
            log_prefix="export",
            lost_hint="Ask for the download again.",
        ),
        Kind(
            name="import",
            model="management.ImportJob",
            execute="datasets.services:import_job_execute",
            noun="import's process",
            budget_setting="KERASUI_MAX_CONCURRENT_IMPORTS",
            log_prefix="import",
            lost_hint="Upload the zip again.",
        ),
        Kind(
            name="suggestions",
            model="management.SuggestionJob",
            execute="labelling.services:suggestion_job_execute",
            noun="suggestions' process",
            budget_setting="KERASUI_MAX_CONCURRENT_SUGGESTIONS",
            log_prefix="suggestions",
            lost_hint="Suggestions are asked for again when images arrive or the model changes.",
            after_success="labelling.services:suggestion_job_after",
        ),
        Kind(
            name="deletion",
            model="management.DataSetDeletion",
            execute="datasets.services:dataset_deletion_execute",
            noun="deletion's process",
            budget_setting="KERASUI_MAX_CONCURRENT_DELETIONS",
            log_prefix="deletion",
            lost_hint="It is queued again and goes on from what is left.",
            # Deleting is idempotent and the dataset is already hidden: a lost deletion starts again
            # rather than leave a dataset half deleted.
            lost_event="requeue",
            lost_fields={"finished_at": None, "worker": ""},
            transitions={
                "requeue": ((_QUEUED, _RUNNING), _QUEUED),  # its process was lost: it goes on from what is left
                "retry": ((_FAILED,), _QUEUED),  # it failed (`manage.py delete_dataset ID`): go on again
            },
        ),
    ]
}


class UnknownKind(LookupError):
    """No job kind has this name."""


def kind_get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"no job kind '{name}': one of {', '.join(KINDS)}") from None


def kind_of(job) -> Kind:
    """The kind of a job model instance (or class)."""
    return kind_get(job.KIND)
