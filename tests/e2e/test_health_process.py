"""A health check end to end: queued by the service, computed by the real `manage.py job health ID`
subprocess as the runner starts it, from EfficientNet-Lite0's features without any download."""

import io

import pytest
from django.core.files.base import ContentFile

from datasets.models import DataSet
from datasets.services import dataset_import_zip, dataset_item_create
from health import services as health
from health.models import HealthCheck
from jobs import lifecycle, runner
from tests.images import colour_image, colour_zip

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queued_check_is_computed_by_the_health_command_in_a_subprocess(lite0_weights, monkeypatch):
    weights = lite0_weights
    # The subprocess gets this process's environment (runner.job_environment).
    monkeypatch.setenv("KERASUI_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("KERASUI_WEIGHTS_BASE_URL", "")
    monkeypatch.setenv("KERASUI_PREPROCESS_WORKERS", "1")
    dataset = DataSet.objects.create(name="Checked", image_size=16)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(6)))
    wrong = dataset_item_create(dataset=dataset, label="green", file=ContentFile(colour_image("blue", seed=99)))
    check, created = health.health_check_start(dataset=dataset, enqueue=False)

    child = runner.job_process_start(job=lifecycle.job_claim(kind="health", job_id=check.pk, worker="test:1"))
    code = child.process.wait(timeout=600)
    runner.job_process_ended(child=child, code=code)

    check = HealthCheck.objects.get(pk=check.pk)
    log = open(check.log_file.path).read()
    assert code == 0 and check.status == "succeeded", (check.error, log[-2000:])
    assert check.started_at and check.finished_at and check.worker
    assert check.report["label_issues"][0]["item"] == wrong.pk
    assert check.report["label_issues"][0]["suggested"] == "blue"
