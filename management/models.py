"""The models of the Django app "management": each domain keeps its own in its package (datasets/,
training/, health/, serving/, labelling/) with `app_label = "management"`, so their tables and the
migrations' history stay this app's. Importing them here is how Django's registry and the migrations
find them; the datasets' training options become fields of DataSet and TrainingRun here too.
"""

from datasets.models import DataSet, DataSetDeletion, DataSetItem, ImportJob, LabelCount
from health.models import HealthCheck, HealthDismissal
from labelling.models import Suggestion, SuggestionJob
from management.options import add_fields
from serving.models import ExportJob
from training.models import RunData, TrainingRun

# DataSet's option fields and the run's snapshot of them (management/options.py).
add_fields(DataSet, TrainingRun)

__all__ = [
    "DataSet",
    "DataSetDeletion",
    "DataSetItem",
    "ExportJob",
    "HealthCheck",
    "HealthDismissal",
    "ImportJob",
    "LabelCount",
    "RunData",
    "Suggestion",
    "SuggestionJob",
    "TrainingRun",
]
