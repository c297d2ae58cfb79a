"""A health check end to end: queued by the service, computed by the real `manage.py health --check ID`
subprocess as the runners start it, from EfficientNet-Lite0's features without any download."""

import io

import pytest
from django.core.files.base import ContentFile

from management import health_runner
from management.models import DataSet, HealthCheck
from management.services import health
from management.services.datasets import dataset_import_zip, dataset_item_create
from tests.images import colour_image, colour_zip

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queued_check_is_computed_by_the_health_command_in_a_subprocess(lite0_weights, monkeypatch):
    weights = lite0_weights
    # The subprocess gets this process's environment (supervisor.training_environment).
    monkeypatch.setenv("KERASUI_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("KERASUI_WEIGHTS_BASE_URL", "")
    monkeypatch.setenv("KERASUI_PREPROCESS_WORKERS", "1")
    dataset = DataSet.objects.create(name="Checked", image_size=16)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(6)))
    wrong = dataset_item_create(dataset=dataset, label="green", file=ContentFile(colour_image("blue", seed=99)))
    check, created = health.health_check_start(dataset=dataset, enqueue=False)

    status = health_runner.supervise(check.pk)

    check = HealthCheck.objects.get(pk=check.pk)
    log = health_runner.health_log_path(check.pk).read_text()
    assert status == "done" and check.status == "done", (check.error, log[-2000:])
    assert check.started_at and check.finished_at and check.worker
    assert check.report["label_issues"][0]["item"] == wrong.pk
    assert check.report["label_issues"][0]["suggested"] == "blue"
