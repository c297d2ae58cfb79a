"""A pretrained run end to end: the real `train` command in a subprocess trains from EfficientNet-Lite0
without any download, its model predicts, and every export format passes its parity check."""

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from ml.efficientnet_lite import ensure_weights
from ml.export import FORMATS
from tests.images import COLOURS, colour_image, colour_zip
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(django_settings.BASE_DIR)


def manage(*args: str, weights: Path) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "KERASUI_DATABASE_NAME": str(connection.settings_dict["NAME"]),
        "KERASUI_MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "KERASUI_CACHE_DIR": str(django_settings.KERASUI_CACHE_DIR),
        "KERASUI_WEIGHTS_DIR": str(weights),
        # No download, ever: Lite0's weights come with its package.
        "KERASUI_WEIGHTS_BASE_URL": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_a_pretrained_run_trains_in_the_train_process_and_every_export_passes_its_parity_check(admin_user, tmp_path):
    weights = tmp_path / "weights"
    ensure_weights(weights)  # converted here once; the subprocess checks its hash and uses it
    dataset = DataSet.objects.create(
        name="Photos",
        architecture="efficientnet_lite0",
        image_size=96,
        epochs=15,
        batch_size=8,
        learning_rate=0.01,
        seed=3,
    )
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(6)))

    completed = manage("train", str(dataset.pk), weights=weights)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    run = TrainingRun.objects.get(dataset=dataset)
    # The head is a linear probe fitted to convergence: one history row, whatever the dataset's epochs.
    assert run.status == "succeeded" and run.progress == 1.0 and len(run.history) == 1
    assert "Building EfficientNet-Lite0" in completed.stdout
    client = APIClient()
    client.force_authenticate(admin_user)
    for label in COLOURS:
        image = base64.b64encode(colour_image(label, seed=777)).decode()
        assert (
            client.post("/api/test/", {"image": image, "dataset": dataset.pk}, format="json").json()["result"] == label
        )

    exported = manage("export", "--run", str(run.pk), "--format", "all", weights=weights)

    assert exported.returncode == 0, exported.stdout + exported.stderr
    run.refresh_from_db()
    for format in FORMATS:
        assert f"{format}: ok" in exported.stdout
    for format in FORMATS[1:]:
        assert run.exports[format]["max_difference"] <= 1e-4, (format, run.exports[format])
