"""Training options, evaluation, resume and validate through the API."""

from datasets.models import DataSet
from training import runs, trainer
from training import services as training
from training.models import TrainingRun

Status = TrainingRun.Status


def test_training_options_round_trip_and_an_impossible_split_names_the_field(api, db):
    options = {
        "name": "Options",
        "architecture": "deep_cnn",
        "learning_rate": 0.0005,
        "test_split": 0.1,
        "early_stopping_patience": 3,
        "reduce_lr_on_plateau": True,
        "balance_classes": True,
        "augment_flip": "horizontal",
        "augment_rotation": 0.05,
        "augment_zoom": 0.1,
        "augment_contrast": 0.2,
        "seed": 42,
    }
    made = api.post("/api/dataset/", options, format="json")
    assert made.status_code == 201, made.content
    assert {name: made.json()[name] for name in options} == options
    run = api.post(f"/api/dataset/{made.json()['id']}/train/").json()
    assert run["architecture"] == "deep_cnn" and run["seed"] == 42 and run["learning_rate"] == 0.0005
    assert run["augmentation"] == {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "contrast": 0.2}

    too_much = api.patch(f"/api/dataset/{made.json()['id']}/", {"validation_split": 0.5, "test_split": 0.45})
    assert too_much.status_code == 400 and "test_split" in too_much.json()
    bad = api.post("/api/dataset/", {"name": "Bad", "architecture": "resnet9000", "augment_flip": "sideways"})
    assert bad.status_code == 400 and {"architecture", "augment_flip"} <= set(bad.json())


def test_a_trained_runs_detail_has_its_splits_and_evaluation_and_the_list_only_counts(api, colour_dataset):
    colour_dataset.test_split = 0.2
    colour_dataset.save()
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker="here:1")
    run = trainer.training_run_execute(run=run)
    assert run.status == Status.SUCCEEDED, run.error

    detail = api.get(f"/api/trainingrun/{run.pk}/").json()
    assert detail["split_counts"] == {"train": 18, "validation": 6, "test": 6}
    assert len(detail["splits"]["test"]) == 6
    assert set(detail["evaluation"]) == {"validation", "test"}
    assert detail["evaluation"]["test"]["labels"] == run.labels
    assert len(detail["evaluation"]["test"]["confusion_matrix"]) == 3
    assert detail["phase"] == "" and detail["resumable"] is False
    listed = api.get(f"/api/trainingrun/?dataset={colour_dataset.pk}").json()["results"][0]
    assert "splits" not in listed and listed["split_counts"]["test"] == 6


def test_resume_queues_a_cancelled_run_again_and_refuses_one_that_cannot(api, colour_dataset, tmp_path):
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=Status.CANCELLED, checkpoint=f"checkpoints/run_{run.pk}", history=[{"epoch": 1, "loss": 1.0}]
    )
    resumed = api.post(f"/api/trainingrun/{run.pk}/resume/")
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
    again = api.post(f"/api/trainingrun/{run.pk}/resume/")
    assert again.status_code == 409 and "cannot be resumed: it is queued" in str(again.json())


def test_resume_and_validate_need_the_change_permission(colour_dataset, api_as):
    from django.contrib.auth.models import Permission

    client = api_as(*Permission.objects.filter(codename__startswith="view_").values_list("codename", flat=True))
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    assert client.post(f"/api/trainingrun/{run.pk}/resume/").status_code == 403
    assert client.post(f"/api/dataset/{colour_dataset.pk}/validate/").status_code == 403


def test_validate_reports_the_layers_or_the_error_line_without_training(api, api_as):
    dataset = DataSet.objects.create(name="Check", image_size=16)
    good = api.post(f"/api/dataset/{dataset.pk}/validate/").json()
    assert good["ok"] is True and good["total_params"] > 0
    assert good["layers"][-1]["name"] == "predictions" and good["layers"][-1]["output_shape"] == [None, 2]
    assert not dataset.runs.exists()

    bad = api.post(
        f"/api/dataset/{dataset.pk}/validate/",
        {"process": "model.add(Flatten())\nmodel.add(Dense(units))\n"},
        format="json",
    ).json()
    assert bad["ok"] is False and bad["line"] == 2 and "NameError" in bad["error"]

    # Validating code that is not saved is running code: it needs the model-code permission too.
    client = api_as("view_dataset", "change_dataset")
    refused = client.post(f"/api/dataset/{dataset.pk}/validate/", {"process": "import os"}, format="json")
    assert refused.status_code == 403 and "process" in refused.json()
    assert client.post(f"/api/dataset/{dataset.pk}/validate/").json()["ok"] is True


def test_a_weights_file_uploaded_for_mobilenet_starts_its_runs(api, colour_dataset, tmp_path):
    import keras
    from django.core.files.uploadedfile import SimpleUploadedFile

    backbone = keras.applications.MobileNetV3Small(
        weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path / "mobilenet.weights.h5"
    backbone.save_weights(path)

    refused = api.patch(
        f"/api/dataset/{colour_dataset.pk}/",
        {"weights_file": SimpleUploadedFile("mobilenet.weights.h5", path.read_bytes())},
        format="multipart",
    )
    assert refused.status_code == 400 and "weights_file" in refused.json()  # the model code cannot use it
    wrong_type = api.patch(
        f"/api/dataset/{colour_dataset.pk}/",
        {"architecture": "mobilenet_v3_small", "weights_file": SimpleUploadedFile("weights.txt", b"x")},
        format="multipart",
    )
    assert wrong_type.status_code == 400 and "weights_file" in wrong_type.json()

    accepted = api.patch(
        f"/api/dataset/{colour_dataset.pk}/",
        {
            "architecture": "mobilenet_v3_small",
            "image_size": "32",
            "epochs": "1",
            "weights_file": SimpleUploadedFile("mobilenet.weights.h5", path.read_bytes()),
        },
        format="multipart",
    )
    assert accepted.status_code == 200, accepted.content
    colour_dataset.refresh_from_db()
    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    assert run.weights_file == colour_dataset.weights_file.name
    assert trainer.run_model_spec(run).weights_path == colour_dataset.weights_file.path
    run = runs.run_claim(run_id=run.pk, worker="here:1")
    run = trainer.training_run_execute(run=run)
    assert run.status == Status.SUCCEEDED, run.error


def test_a_run_shows_which_worker_trains_it_and_its_last_heartbeat(api, admin_client, db):
    run = training.training_run_create(dataset=DataSet.objects.create(name="Remote"), enqueue=False)
    runs.run_claim(run_id=run.pk, worker="w2@gpu-box:4242")
    detail = api.get(f"/api/trainingrun/{run.pk}/").json()
    assert detail["worker"] == "w2@gpu-box:4242" and detail["heartbeat_at"]
    assert "w2@gpu-box:4242" in admin_client.get("/admin/management/trainingrun/").content.decode()
    assert "w2@gpu-box:4242" in admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
