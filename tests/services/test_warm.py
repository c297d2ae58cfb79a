"""Warm workers: a web process loads the current models when it starts and a newly current run
as soon as it is current, so that no request pays for loading a model."""

import time

import pytest

from datasets.models import DataSet
from management.errors import Conflict
from serving.prediction import model_cache, prediction_current_run, prediction_predict
from serving.warm import ServingWatcher
from tests.images import COLOURS, colour_image
from tests.runs import install_model
from training.versions import training_run_promote

LABELS = sorted(COLOURS)


@pytest.fixture
def watcher():
    """A watcher whose thread wakes only when asked (its interval is an hour)."""
    watcher = ServingWatcher(interval=3600)
    yield watcher
    watcher.stop()
    model_cache.watcher = None


def predict(dataset: DataSet) -> int:
    """Predict one image the way /api/test/ does; the run that answered."""
    run = prediction_current_run(dataset_id=dataset.pk)
    return prediction_predict(run=run, images=[("x.png", colour_image("red", seed=3))])[0].run_id


def test_a_starting_worker_loads_the_current_models_of_the_datasets_trained_last(
    db, colour_model_file, settings, watcher
):
    settings.KERASUI_MODEL_CACHE_SIZE = 2
    runs = [
        install_model(DataSet.objects.create(name=f"Set {n}", image_size=16), colour_model_file, labels=LABELS)
        for n in range(3)
    ]
    assert watcher.preload() == [runs[1].pk, runs[2].pk]
    assert model_cache.loads_by_trigger == {"start": 2}


def test_polling_loads_a_newly_current_run_of_a_dataset_it_serves_once(trained_dataset, colour_model_file, watcher):
    older = trained_dataset.current_run
    assert watcher.preload() == [older.pk]
    assert watcher.poll() == []
    newer = install_model(trained_dataset, colour_model_file)
    assert watcher.poll() == [newer.pk]
    # The superseded model stays a moment (a request may have just picked it), then goes.
    assert older.pk in model_cache and model_cache.drop_retired(older_than=0) == [older.pk]
    assert watcher.poll() == []
    training_run_promote(run=older)  # a rollback is a newly current run too
    assert watcher.poll() == [older.pk]
    assert predict(trained_dataset) == older.pk
    assert model_cache.loads_by_trigger == {"start": 1, "watch": 2}


def test_a_rollback_to_a_model_still_loaded_makes_it_current_again_without_a_load(
    trained_dataset, colour_model_file, watcher
):
    older = trained_dataset.current_run
    watcher.preload()
    newer = install_model(trained_dataset, colour_model_file)
    assert watcher.poll() == [newer.pk]
    training_run_promote(run=older)
    assert watcher.poll() == []
    assert model_cache.drop_retired(older_than=0) == [newer.pk]
    assert predict(trained_dataset) == older.pk
    assert model_cache.loads_by_trigger == {"start": 1, "watch": 1}


@pytest.mark.django_db(transaction=True)
def test_a_newly_current_run_is_loaded_by_the_watcher_while_the_version_it_replaces_answers(
    trained_dataset, colour_model_file, watcher
):
    older = trained_dataset.current_run
    watcher.preload()
    model_cache.watcher = watcher
    watcher.start()
    newer = install_model(trained_dataset, colour_model_file)
    # The request does not wait for the new model: the version being replaced answers (and says so).
    assert predict(trained_dataset) == older.pk
    deadline = time.monotonic() + 120
    while newer.pk not in model_cache and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predict(trained_dataset) == newer.pk
    assert model_cache.drop_retired(older_than=0) == [older.pk]
    assert model_cache.loads_by_trigger["request"] == 0 and model_cache.loads_by_trigger["watch"] == 1


def test_a_new_version_that_cannot_be_loaded_is_not_stood_in_for(trained_dataset, colour_model_file, watcher):
    import os

    from django.core.files.storage import default_storage

    from serving.services import onnx_name

    watcher.preload()
    model_cache.watcher = watcher
    watcher.start()
    newer = install_model(trained_dataset, colour_model_file)
    os.remove(newer.model_file.path)
    default_storage.delete(onnx_name(newer))
    assert watcher.poll() == [] and newer.pk in watcher.failed
    with pytest.raises(Conflict, match=f"the model of run {newer.pk} cannot be loaded"):
        predict(trained_dataset)


def test_a_version_whose_engine_is_undecided_is_left_to_the_thread(
    trained_dataset, colour_model_file, tmp_path, watcher
):
    import shutil

    bare = tmp_path / "bare.keras"
    shutil.copy(colour_model_file, bare)
    imported = install_model(trained_dataset, bare)
    # Deciding means making and proving an ONNX export (seconds): not before the first request.
    assert watcher.preload() == []
    assert watcher.poll() == [imported.pk]
    assert model_cache.loads_by_trigger == {"watch": 1}


def test_an_imported_version_made_current_by_the_lifecycle_is_loaded_by_the_watcher(
    trained_dataset, colour_model_file, watcher
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training.versions import training_run_import

    older = trained_dataset.current_run
    assert watcher.preload() == [older.pk]
    upload = SimpleUploadedFile("colours.keras", colour_model_file.read_bytes())
    imported = training_run_import(dataset=trained_dataset, file=upload, labels=["blue", "green", "red"])
    trained_dataset.refresh_from_db()
    assert trained_dataset.current_run_id == imported.pk
    # Its engine is decided by the watcher (its ONNX export made and proven), not by a request.
    assert watcher.poll() == [imported.pk]
    assert predict(trained_dataset) == imported.pk
    assert model_cache.loads_by_trigger == {"start": 1, "watch": 1}


def test_a_version_waiting_for_a_model_job_slot_is_loaded_at_a_later_poll(
    trained_dataset, colour_model_file, tmp_path, settings, watcher
):
    import shutil
    from contextlib import ExitStack

    from jobs.budgets import model_job_slot

    settings.KERASUI_MAX_CONCURRENT_JOBS = 1
    settings.KERASUI_LOCK_DIR = tmp_path / "locks"
    watcher.preload()
    bare = tmp_path / "bare.keras"
    shutil.copy(colour_model_file, bare)
    imported = install_model(trained_dataset, bare)
    with ExitStack() as busy:
        busy.enter_context(model_job_slot(what="another export"))
        assert watcher.poll() == []
    # Not a failure (a request would not be left to load it): tried again once a slot is free.
    assert imported.pk not in watcher.failed
    assert watcher.poll() == [imported.pk]
    assert model_cache.loads_by_trigger == {"start": 1, "watch": 1}
