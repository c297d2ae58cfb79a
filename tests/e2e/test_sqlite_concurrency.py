"""The web process and a training process write to SQLite at the same time without 'database is locked'."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction

from datasets.models import DataSet, DataSetItem
from training.models import TrainingRun
from training.services import training_run_create

pytestmark = pytest.mark.django_db(transaction=True)

WRITER = """
import django, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
django.setup()
from django.db import transaction
from training.models import TrainingRun
run_id = int(sys.argv[1])
for step in range(300):
    with transaction.atomic():
        run = TrainingRun.objects.get(pk=run_id)
        TrainingRun.objects.filter(pk=run_id).update(progress=step / 300, epoch=step, history=[{"epoch": step}] * 20)
print("writer done")
"""


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's locking is what this checks")
def test_web_and_training_processes_write_at_once_without_locking_errors():
    dataset = DataSet.objects.create(name="Busy")
    run = training_run_create(dataset=dataset, enqueue=False)
    environment = {
        **os.environ,
        "KERASUI_DATABASE_NAME": str(connection.settings_dict["NAME"]),
        "KERASUI_MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run.pk)],
        cwd=Path(settings.BASE_DIR),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    written = 0
    while writer.poll() is None and time.monotonic() < deadline:
        # What the web process does meanwhile: read progress, write rows in transactions.
        with transaction.atomic():
            TrainingRun.objects.get(pk=run.pk)
            DataSetItem.objects.create(dataset=dataset, label=f"l{written % 3}", image=f"datasets/x{written}.png")
        written += 1
    stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    assert "writer done" in stdout and "locked" not in stderr
    assert written > 10  # the two really overlapped
    assert TrainingRun.objects.get(pk=run.pk).epoch == 299
    assert DataSetItem.objects.filter(dataset=dataset).count() == written
