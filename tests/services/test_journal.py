"""Files of uploads and runs a killed process left behind are found and deleted; nothing else is."""

import errno
import io
import os
import socket
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from rest_framework.test import APIClient

from datasets.models import DataSet, DataSetItem
from management.journal import media_journals_recover
from tests.images import colour_zip
from tests.runs import imported
from training import runs, trainer
from training import services as training
from training.models import TrainingRun


def write(name: str, data: bytes = b"x") -> Path:
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def journal(pid: int, names: list[str]) -> Path:
    path = Path(settings.MEDIA_ROOT) / "journal" / f"{socket.gethostname()}-{pid}-abcd.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(name + "\n" for name in names))
    return path


def test_a_dead_processes_journal_loses_its_unreferenced_files_and_keeps_the_rest(db):
    dataset = DataSet.objects.create(name="Kept")
    kept = DataSetItem.objects.create(dataset=dataset, label="a", image="datasets/1/kept.png")
    write(kept.image.name)
    orphan = write("datasets/1/orphan.png")
    dead = journal(2**22 + 777, [kept.image.name, "datasets/1/orphan.png", "../../etc/passwd", "datasets/1/gone.png"])
    alive = journal(os.getpid(), ["datasets/1/in-flight.png"])
    in_flight = write("datasets/1/in-flight.png")

    assert media_journals_recover() == ["datasets/1/orphan.png"]
    assert not orphan.exists() and not dead.exists()
    assert (Path(settings.MEDIA_ROOT) / kept.image.name).exists()
    assert alive.exists() and in_flight.exists()  # its process still runs: it may yet commit


def test_a_full_disk_during_a_zip_import_answers_507_and_leaves_nothing(admin_user, db):
    dataset = DataSet.objects.create(name="Full")
    client = APIClient()
    client.force_authenticate(admin_user)
    folder = Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk)
    real_open = os.open
    created = []

    def open_until_full(path, flags, mode=0o777, **kwargs):
        """The fifth image file of the dataset is created, then the disk is full while it is written
        (its bytes go to /dev/full): a half-written file, whichever code writes it."""
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            created.append(path)
            if len(created) == 5:
                os.close(real_open(path, flags, mode, **kwargs))
                return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, **kwargs)

    upload = io.BytesIO(colour_zip(4))
    upload.name = "colours.zip"
    with mock.patch("os.open", open_until_full):
        job = imported(client, client.post(f"/api/dataset/{dataset.pk}/upload/", {"file": upload}))
    assert len(created) == 5
    assert job["status"] == "failed"
    assert job["error"] == "the server's disk is full: nothing of this zip was imported"
    assert not dataset.items.exists()
    assert not any((Path(settings.MEDIA_ROOT) / "imports").iterdir())  # the zip kept for the job is gone
    assert not folder.exists() or not any(path.is_file() for path in folder.rglob("*"))
    assert not any((Path(settings.MEDIA_ROOT) / "journal").glob("*.txt"))


def test_a_full_disk_while_saving_the_model_fails_the_run_and_the_previous_model_stays_current(trained_dataset):
    previous = trained_dataset.current_run_id
    trained_dataset.epochs = 1
    trained_dataset.save()
    run = training.training_run_create(dataset=trained_dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker="here:1")
    real_save = FileSystemStorage._save

    def half_then_full(storage, name, content):
        if name.startswith("models/"):
            (Path(storage.location) / name).write_bytes(b"half a model")
            raise OSError(errno.ENOSPC, "No space left on device", name)
        return real_save(storage, name, content)

    with mock.patch.object(FileSystemStorage, "_save", half_then_full):
        run = trainer.training_run_execute(run=run)
    assert run.status == TrainingRun.Status.FAILED and run.interrupted
    assert run.error.startswith(f"a file could not be written (models/run_{run.pk}.keras): the disk is full.")
    assert not run.model_file
    assert not (Path(settings.MEDIA_ROOT) / f"models/run_{run.pk}.keras").exists()
    trained_dataset.refresh_from_db()
    assert trained_dataset.current_run_id == previous
