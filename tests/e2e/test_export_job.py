"""An export asked for through the API: answered at once with the job to follow, made by the thread
runner in its own `manage.py job export ID` process, and then downloaded."""

import time

import pytest
from rest_framework.test import APIClient

from jobs import runner
from serving.models import ExportJob

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_export_requested_through_the_api_answers_at_once_and_its_file_arrives(
    trained_dataset, admin_user, settings
):
    settings.KERASUI_TRAINING_BACKEND = "thread"
    runner.reset()
    client = APIClient()
    client.force_authenticate(admin_user)
    url = f"/api/dataset/{trained_dataset.pk}/model/?format=h5"

    started = time.monotonic()
    response = client.get(url)
    answered = time.monotonic() - started
    assert response.status_code == 202, response.content[:300]
    job = response.json()
    assert job["status"] in {"queued", "running"} and job["format"] == "h5"
    assert answered < 10  # no export was made in the request (it takes far longer with TensorFlow)
    assert client.get(url).json()["id"] == job["id"]  # asking again follows the same job

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        followed = client.get(job["url"]).json()
        if followed["status"] not in {"queued", "running"}:
            break
        time.sleep(1)
    record = ExportJob.objects.get(pk=job["id"])
    log = record.log_file.path and open(record.log_file.path).read()[-2000:]
    assert followed["status"] == "succeeded", (followed, log)
    assert followed["progress"] == 1.0 and record.worker

    download = client.get(followed["download"])
    assert download.status_code == 200 and download["Content-Disposition"].startswith("attachment")
    assert len(b"".join(download.streaming_content)) > 1000
