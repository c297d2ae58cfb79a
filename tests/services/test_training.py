import io
import os
import socket

import pytest
from django.core.files.base import ContentFile

from datasets.models import DataSet, DataSetItem
from jobs import watchdog
from management.errors import Conflict
from serving.prediction import model_cache, prediction_predict
from tests.images import COLOURS, colour_image, png, zip_of
from training import runs, trainer
from training import services as training
from training.models import TrainingRun

Status = TrainingRun.Status


def execute(dataset: DataSet) -> TrainingRun:
    run = training.training_run_create(dataset=dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker=runs.this_worker())
    return trainer.training_run_execute(run=run)


def test_a_run_snapshots_the_options_code_and_sorted_labels(colour_dataset):
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    colour_dataset.image_size = 99
    colour_dataset.process = "changed"
    colour_dataset.save()
    run.refresh_from_db()
    assert run.status == Status.QUEUED
    assert run.labels == sorted(COLOURS)
    assert (run.image_size, run.epochs, run.batch_size, run.color_mode) == (16, 6, 8, "rgb")
    assert run.process != "changed" and "model.add" in run.process


def test_training_while_a_run_is_queued_or_running_is_refused(colour_dataset):
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    with pytest.raises(Conflict, match="already being trained"):
        training.training_run_create(dataset=colour_dataset, enqueue=False)
    runs.run_claim(run_id=run.pk, worker="here:1")
    with pytest.raises(Conflict):
        training.training_run_create(dataset=colour_dataset, enqueue=False)
    training.training_run_cancel(run=run)
    assert training.training_run_create(dataset=colour_dataset, enqueue=False).pk != run.pk


def test_labels_of_other_datasets_are_not_in_the_run(colour_dataset):
    other = DataSet.objects.create(name="Other")
    DataSetItem.objects.create(dataset=other, label="zebra", image="x.png")
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    assert "zebra" not in run.labels


def test_an_empty_dataset_fails_with_a_readable_message(db):
    run = execute(DataSet.objects.create(name="Empty"))
    assert run.status == Status.FAILED
    assert "no images" in run.error and run.finished_at


def test_a_single_label_fails_with_a_readable_message(db):
    dataset = DataSet.objects.create(name="One")
    training_data = zip_of({f"cat/{n}.png": png() for n in range(3)})
    from datasets.services import dataset_import_zip

    dataset_import_zip(dataset=dataset, file=io.BytesIO(training_data))
    run = execute(dataset)
    assert run.status == Status.FAILED
    assert "only one label ('cat')" in run.error


def test_bad_model_code_fails_naming_the_line(colour_dataset):
    colour_dataset.process = "model.add(Flatten())\nmodel.add(Dense('many'))"
    colour_dataset.save()
    run = execute(colour_dataset)
    assert run.status == Status.FAILED
    assert run.error.startswith("model code: line 2:")


def test_a_corrupt_image_fails_the_run_naming_the_item(colour_dataset):
    item = DataSetItem(dataset=colour_dataset, label="red")
    item.image.save("bad.png", ContentFile(b"\x89PNG broken"), save=True)
    run = execute(colour_dataset)
    assert run.status == Status.FAILED
    assert f"item {item.pk} (label 'red'" in run.error


def test_a_cancelled_run_ends_cancelled_without_a_model(colour_dataset, monkeypatch):
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker="here:1")
    report = runs.run_progress

    def cancel_then_report(*, run_id, progress):
        training.training_run_cancel(run=TrainingRun.objects.get(pk=run_id))  # a person presses Cancel mid-way
        return report(run_id=run_id, progress=progress)

    monkeypatch.setattr(runs, "run_progress", cancel_then_report)
    run = trainer.training_run_execute(run=run)
    assert run.status == Status.CANCELLED and not run.model_file
    colour_dataset.refresh_from_db()
    assert colour_dataset.current_run is None


def test_a_run_left_running_by_a_dead_process_is_marked_failed(colour_dataset):
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    dead_pid = 2**22 + 12345
    runs.run_claim(run_id=run.pk, worker=f"{socket.gethostname()}:{dead_pid}")
    alive = training.training_run_create(dataset=DataSet.objects.create(name="Alive"), enqueue=False)
    runs.run_claim(run_id=alive.pk, worker=f"{socket.gethostname()}:{os.getpid()}")
    assert watchdog.jobs_fail_interrupted() == 1
    run.refresh_from_db()
    alive.refresh_from_db()
    assert run.status == Status.FAILED and "interrupted" in run.error
    assert alive.status == Status.RUNNING


def test_training_succeeds_and_its_model_predicts_new_images_correctly(colour_dataset):
    run = execute(colour_dataset)
    assert run.status == Status.SUCCEEDED, run.error
    assert run.progress == 1.0 and run.epoch == 6 and len(run.history) == 6
    assert run.metrics["val_accuracy"] >= 0.9
    assert run.model_file.name == f"models/run_{run.pk}.keras"
    colour_dataset.refresh_from_db()
    assert colour_dataset.current_run_id == run.pk
    # It became current with its ONNX export made and proven: ONNX Runtime serves it.
    assert run.serving_engine == "onnxruntime" and "proven against the Keras model" in run.serving_note
    assert run.exports["onnx"]["status"] == "ok" and run.exports["onnx"]["max_difference"] <= 1e-5

    # Held-out images the model never saw: each must get its own label, not the first one.
    images = [(label, colour_image(label, seed=999_000 + n)) for label in COLOURS for n in range(3)]
    predictions = prediction_predict(dataset=colour_dataset, images=images)
    assert [prediction.label for prediction in predictions] == [label for label, _ in images]
    assert all(prediction.confidence > 0.5 for prediction in predictions)
    assert set(predictions[0].probabilities) == set(COLOURS)
    assert abs(sum(predictions[0].probabilities.values()) - 1) < 1e-3

    # Retraining makes the new run current, and the cache loads its model instead of the old one.
    loads = model_cache.loads
    prediction_predict(dataset=colour_dataset, images=images[:1])
    assert model_cache.loads == loads
    # Another seed holds out other images: `always`, so that the swap is tested whatever they score.
    DataSet.objects.filter(pk=colour_dataset.pk).update(promotion_policy="always")
    colour_dataset.refresh_from_db()
    second = execute(colour_dataset)
    assert second.status == Status.SUCCEEDED
    colour_dataset.refresh_from_db()
    assert colour_dataset.current_run_id == second.pk
    assert prediction_predict(dataset=colour_dataset, images=images[:1])[0].run_id == second.pk
    assert model_cache.loads == loads + 1
    assert run.pk not in model_cache and second.pk in model_cache


def test_deleting_the_current_run_removes_its_file_and_the_previous_model_takes_over(
    trained_dataset, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    older = trained_dataset.current_run
    storage = older.model_file.storage
    newer = training.training_run_create(dataset=trained_dataset, enqueue=False)
    with older.model_file.open("rb") as file:
        newer_model = storage.save(f"models/run_{newer.pk}.keras", ContentFile(file.read()))
    newer_log = storage.save(f"logs/run_{newer.pk}.log", ContentFile(b"log"))
    TrainingRun.objects.filter(pk=newer.pk).update(
        status=Status.SUCCEEDED, model_file=newer_model, log_file=newer_log, finished_at=timezone.now()
    )
    trained_dataset.current_run_id = newer.pk
    trained_dataset.save()
    with django_capture_on_commit_callbacks(execute=True):
        training.training_run_delete(run=TrainingRun.objects.get(pk=newer.pk))
    trained_dataset.refresh_from_db()
    assert trained_dataset.current_run_id == older.pk
    assert not storage.exists(newer_log) and not storage.exists(newer_model)
    assert storage.exists(older.model_file.name)
    active = training.training_run_create(dataset=trained_dataset, enqueue=False)
    with pytest.raises(Conflict, match="cancel it"):
        training.training_run_delete(run=active)


def test_a_run_records_its_splits_and_evaluates_the_held_out_images(colour_dataset):
    colour_dataset.test_split = 0.2
    colour_dataset.seed = 1234
    colour_dataset.save()
    run = execute(colour_dataset)
    assert run.status == Status.SUCCEEDED, run.error
    ids = set(colour_dataset.items.values_list("id", flat=True))
    train, validation, test = (set(run.splits[name]) for name in ("train", "validation", "test"))
    assert train | validation | test == ids and not (train & validation or train & test or validation & test)
    assert (len(train), len(validation), len(test)) == (18, 6, 6)
    assert run.seed == 1234

    for name, count in (("validation", 6), ("test", 6)):
        report = run.evaluation[name]
        assert report["count"] == count and report["labels"] == sorted(COLOURS)
        assert sum(map(sum, report["confusion_matrix"])) == count
        assert [row["support"] for row in report["per_class"]] == [2, 2, 2]
        assert len(report["misclassified"]) == report["misclassified_count"]
    assert run.metrics["test_accuracy"] == run.evaluation["test"]["accuracy"]
    assert run.metrics["val_accuracy"] == run.evaluation["validation"]["accuracy"] >= 0.8

    # The same images and seed give the same split.
    again = execute(colour_dataset)
    assert again.splits == run.splits


def test_misclassified_items_are_listed_with_their_true_and_predicted_labels(colour_dataset):
    # Relabel two red images as green: a model that learned colours must get them "wrong".
    colour_dataset.validation_split = 0
    colour_dataset.save()
    wrong = list(colour_dataset.items.filter(label="red")[:2])
    DataSetItem.objects.filter(pk__in=[item.pk for item in wrong]).update(label="green")
    run = execute(colour_dataset)
    assert run.status == Status.SUCCEEDED, run.error
    report = run.evaluation["training"]  # nothing held out: the training images are reported
    listed = {entry["item"]: entry for entry in report["misclassified"]}
    for item in wrong:
        assert listed[item.pk]["true"] == "green" and listed[item.pk]["predicted"] == "red"


def test_a_cancelled_run_resumes_from_its_last_completed_epoch_and_the_old_model_stays_current_meanwhile(
    trained_dataset, monkeypatch, django_capture_on_commit_callbacks, capsys
):
    previous = trained_dataset.current_run_id
    trained_dataset.epochs = 4
    trained_dataset.early_stopping_patience = 0
    trained_dataset.save()
    run = training.training_run_create(dataset=trained_dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker="here:1")
    report = runs.run_progress

    def cancel_after_two_epochs(*, run_id, progress):
        if len(progress.history) >= 2:
            training.training_run_cancel(run=TrainingRun.objects.get(pk=run_id))
        return report(run_id=run_id, progress=progress)

    monkeypatch.setattr(runs, "run_progress", cancel_after_two_epochs)
    run = trainer.training_run_execute(run=run)
    assert run.status == Status.CANCELLED and run.resumable and len(run.history) == 2
    trained_dataset.refresh_from_db()
    assert trained_dataset.current_run_id == previous

    monkeypatch.setattr(runs, "run_progress", report)
    with django_capture_on_commit_callbacks(execute=False):
        run = training.training_run_resume(run=run)
    assert run.status == Status.QUEUED
    run = runs.run_claim(run_id=run.pk, worker="here:1")
    capsys.readouterr()
    run = trainer.training_run_execute(run=run)
    assert run.status == Status.SUCCEEDED, run.error
    output = capsys.readouterr().out
    assert "Resuming from the checkpoint of epoch 2" in output and "Epoch 3/4" in output and "Epoch 1/4" not in output
    assert [row["epoch"] for row in run.history] == [1, 2, 3, 4]
    trained_dataset.refresh_from_db()
    assert trained_dataset.current_run_id == run.pk
    with pytest.raises(Conflict, match="cannot be resumed: it succeeded"):
        training.training_run_resume(run=run)


def test_a_failed_run_that_was_not_interrupted_cannot_be_resumed(colour_dataset):
    colour_dataset.process = "model.add(Dense('oops'))"
    colour_dataset.save()
    run = execute(colour_dataset)
    with pytest.raises(Conflict, match="failed by itself"):
        training.training_run_resume(run=run)


def test_a_run_killed_mid_way_is_interrupted_and_resumable(colour_dataset):
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    dead_pid = 2**22 + 54321
    runs.run_claim(run_id=run.pk, worker=f"{socket.gethostname()}:{dead_pid}")
    TrainingRun.objects.filter(pk=run.pk).update(checkpoint=f"checkpoints/run_{run.pk}", history=[{"epoch": 1}])
    watchdog.jobs_fail_interrupted()
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.interrupted and run.resumable
    assert "Resume the run" in run.error
