"""Model versions through the API: list, promote, predict by version, download every format, import."""

import base64
import io
import json
import zipfile
from pathlib import Path

import keras
import pytest
from django.conf import settings

from serving import exports
from tests.images import colour_image
from tests.runs import download, install_model
from training.models import TrainingRun


@pytest.fixture
def two_versions(trained_dataset, colour_model_file):
    """The colour dataset with two succeeded runs; the newer (second) is current."""
    older = trained_dataset.current_run
    newer = install_model(trained_dataset, colour_model_file)
    return older, newer


def _image(label="red"):
    return base64.b64encode(colour_image(label, seed=7)).decode()


def test_the_versions_of_a_dataset_are_listed_with_metrics_and_the_current_one(api, two_versions):
    older, newer = two_versions
    TrainingRun.objects.create(**{**_fields(older), "status": "failed"})
    body = api.get(f"/api/trainingrun/?dataset={older.dataset_id}&status=succeeded").json()
    rows = {row["id"]: row for row in body["results"]}
    assert set(rows) == {older.pk, newer.pk}
    assert rows[newer.pk]["is_current"] and not rows[older.pk]["is_current"]
    assert rows[older.pk]["metrics"] == {"val_accuracy": 1.0}
    assert rows[older.pk]["imported"] is False


def _fields(run):
    return {
        field.name: getattr(run, field.name)
        for field in TrainingRun._meta.concrete_fields
        if field.name not in {"id", "created_at", "model_file", "log_file"}
    }


def test_promote_rolls_back_to_an_older_version_and_predictions_follow(api, two_versions):
    older, newer = two_versions
    response = api.post(f"/api/trainingrun/{older.pk}/promote/")
    assert response.status_code == 200 and response.json()["is_current"]
    assert older.dataset.__class__.objects.get(pk=older.dataset_id).current_run_id == older.pk
    answer = api.post("/api/test/", {"dataset": older.dataset_id, "image": _image()}, format="json").json()
    assert answer["run"] == older.pk


def test_promote_refuses_a_run_without_a_model(api, two_versions):
    failed = TrainingRun.objects.create(**{**_fields(two_versions[0]), "status": "failed"})
    response = api.post(f"/api/trainingrun/{failed.pk}/promote/")
    assert response.status_code == 409
    assert "only a succeeded run can be current" in response.json()["run"][0]


def test_predict_with_a_given_version(api, two_versions):
    older, newer = two_versions
    payload = {"dataset": older.dataset_id, "run": older.pk, "image": _image("blue")}
    answer = api.post("/api/test/", payload, format="json").json()
    assert answer["run"] == older.pk and answer["result"] == "blue"
    # The run alone names the dataset too.
    assert api.post("/api/test/", {"run": newer.pk, "image": _image()}, format="json").json()["run"] == newer.pk


def test_predict_by_version_names_the_run_when_it_cannot(api, two_versions):
    older, _ = two_versions
    unknown = api.post("/api/test/", {"run": 999, "image": _image()}, format="json")
    assert unknown.status_code == 400 and "no training run with id 999" in unknown.json()["run"][0]
    other = api.post("/api/test/", {"dataset": 999, "run": older.pk, "image": _image()}, format="json")
    assert other.status_code == 400 and "not of dataset 999" in other.json()["run"][0]
    failed = TrainingRun.objects.create(**{**_fields(older), "status": "failed"})
    refused = api.post("/api/test/", {"run": failed.pk, "image": _image()}, format="json")
    assert refused.status_code == 409 and "choose a succeeded run" in refused.json()["run"][0]
    neither = api.post("/api/test/", {"image": _image()}, format="json")
    assert neither.status_code == 400 and "dataset" in neither.json()


@pytest.mark.parametrize("format", ["keras", "h5", "savedmodel", "tflite", "onnx"])
def test_each_format_downloads_and_records_its_parity_with_keras(api, trained_dataset, format):
    response = download(api, f"/api/dataset/{trained_dataset.pk}/model/?format={format}")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Disposition"].startswith("attachment")
    content = b"".join(response.streaming_content)
    assert len(content) > 1000
    record = TrainingRun.objects.get(pk=trained_dataset.current_run_id).exports[format]
    assert record["status"] == "ok"
    assert record["max_difference"] <= 1e-4
    if format != "keras":
        assert record["samples"] == 16 and record["size"] == len(content)
        assert (Path(settings.MEDIA_ROOT) / record["file"]).is_file()


def test_float16_tflite_and_a_bundle_with_labels_and_a_usage_note(api, trained_dataset):
    run_id = trained_dataset.current_run_id
    response = download(api, f"/api/trainingrun/{run_id}/model/?format=tflite&precision=float16&bundle=1")
    assert response.status_code == 200
    bundle = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = set(bundle.namelist())
    assert {"labels.json", "README.txt"} <= names and any(name.endswith("-float16.tflite") for name in names)
    metadata = json.loads(bundle.read("labels.json"))
    assert metadata["labels"] == ["blue", "green", "red"] and metadata["image_size"] == 16
    assert "get_signature_runner" in bundle.read("README.txt").decode()
    record = TrainingRun.objects.get(pk=run_id).exports["tflite_float16"]
    assert record["status"] == "ok" and record["max_difference"] <= 1e-3


def test_an_export_is_made_once_and_kept(api, trained_dataset, monkeypatch):
    url = f"/api/dataset/{trained_dataset.pk}/model/?format=h5"
    assert download(api, url).status_code == 200
    monkeypatch.setattr(exports, "export_in_child", lambda *args, **kwargs: pytest.fail("exported twice"))
    assert api.get(url).status_code == 200  # at once: no job


def test_an_export_failing_its_check_is_refused_recorded_and_never_served(api, trained_dataset, monkeypatch):
    from ml.export import ExportReport

    def diverging(model_path, *, target, **kwargs):
        Path(target).write_bytes(b"half an export")
        error = "the tflite export differs from the Keras model by up to 0.2 on 16 sample images (tolerance 0.0001)"
        return ExportReport(ok=False, max_difference=0.2, tolerance=1e-4, samples=16, error=error)

    monkeypatch.setattr(exports, "export_in_child", diverging)
    url = f"/api/dataset/{trained_dataset.pk}/model/?format=tflite"
    response = download(api, url)
    assert response.status_code == 422
    assert "differs from the Keras model by up to 0.2" in response.json()["format"][0]
    record = TrainingRun.objects.get(pk=trained_dataset.current_run_id).exports["tflite"]
    assert record["status"] == "failed" and "file" not in record
    folder = Path(settings.MEDIA_ROOT) / f"exports/run_{trained_dataset.current_run_id}"
    assert [path.name for path in folder.iterdir() if path.suffix == ".tflite"] == []
    assert api.get(url).status_code == 422


def test_a_bad_format_or_precision_is_a_400_naming_it(api, trained_dataset):
    bad = api.get(f"/api/dataset/{trained_dataset.pk}/model/?format=pickle")
    assert bad.status_code == 400 and "choose one of keras, h5" in bad.json()["format"][0]
    half = api.get(f"/api/dataset/{trained_dataset.pk}/model/?format=onnx&precision=float16")
    assert half.status_code == 400 and "tflite only" in half.json()["precision"][0]


def test_deleting_a_version_removes_its_model_and_exports(api, two_versions, django_capture_on_commit_callbacks):
    older, newer = two_versions
    assert download(api, f"/api/trainingrun/{older.pk}/model/?format=h5").status_code == 200
    model = Path(settings.MEDIA_ROOT) / f"models/run_{older.pk}.keras"
    folder = Path(settings.MEDIA_ROOT) / f"exports/run_{older.pk}"
    assert model.is_file() and folder.is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/trainingrun/{older.pk}/").status_code == 204
    assert not model.exists() and not folder.exists()


# Import


def _upload(api, dataset, path, labels="blue,green,red", name=None):
    with open(path, "rb") as file:
        data = {"file": io.BytesIO(file.read()), "labels": labels}
    data["file"].name = name or Path(path).name
    return api.post(f"/api/dataset/{dataset.pk}/import_model/", data, format="multipart")


def _small_model(tmp_path, *, size=16, outputs=3, lambda_layer=False):
    layers = [keras.Input((size, size, 3))]
    if lambda_layer:
        layers.append(keras.layers.Lambda(lambda x: x / 255.0))
    layers += [keras.layers.Flatten(), keras.layers.Dense(outputs, activation="softmax")]
    path = tmp_path / f"model-{size}-{outputs}-{lambda_layer}.keras"
    keras.Sequential(layers).save(path)
    return path


def test_importing_a_good_model_makes_a_current_version_that_predicts(api, colour_dataset, colour_model_file):
    response = _upload(api, colour_dataset, colour_model_file, labels='["blue", "green", "red"]')
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["imported"] and body["is_current"] and body["status"] == "succeeded"
    assert body["labels"] == ["blue", "green", "red"] and body["image_size"] == 16
    answer = api.post("/api/test/", {"dataset": colour_dataset.pk, "image": _image("green")}, format="json")
    assert answer.json()["run"] == body["id"] and answer.json()["result"] == "green"
    assert download(api, f"/api/trainingrun/{body['id']}/model/?format=onnx").status_code == 200


def test_importing_a_model_of_another_input_size_is_refused(api, colour_dataset, tmp_path):
    response = _upload(api, colour_dataset, _small_model(tmp_path, size=32))
    assert response.status_code == 400
    assert "32×32 rgb images" in response.json()["file"][0] and "16×16" in response.json()["file"][0]


def test_importing_a_model_with_another_number_of_outputs_is_refused(api, colour_dataset, tmp_path):
    response = _upload(api, colour_dataset, _small_model(tmp_path, outputs=2))
    assert response.status_code == 400
    assert "3 labels were given" in response.json()["labels"][0]


def test_importing_a_file_that_is_not_a_model_is_refused(api, colour_dataset, tmp_path):
    path = tmp_path / "photo.keras"
    path.write_bytes(colour_image("red", seed=1))
    response = _upload(api, colour_dataset, path)
    assert response.status_code == 400 and "not a Keras model" in response.json()["file"][0]
    other = _upload(api, colour_dataset, path, name="model.h5")
    assert other.status_code == 400 and ".keras" in other.json()["file"][0]


def test_importing_a_model_with_a_lambda_layer_is_refused_by_safe_mode(api, colour_dataset, tmp_path):
    response = _upload(api, colour_dataset, _small_model(tmp_path, lambda_layer=True))
    assert response.status_code == 400
    assert "safe mode" in response.json()["file"][0]
    assert not colour_dataset.runs.exists()


def test_import_labels_must_be_a_list_of_different_labels(api, colour_dataset, colour_model_file):
    assert "repeated: red" in _upload(api, colour_dataset, colour_model_file, "red,red,blue").json()["labels"][0]
    assert "JSON" in _upload(api, colour_dataset, colour_model_file, '["a", ').json()["labels"][0]


def test_import_and_promote_need_their_permissions(api_as, colour_dataset, colour_model_file, trained_dataset):
    editor = api_as("view_dataset", "change_dataset", "view_trainingrun")
    refused = _upload(editor, colour_dataset, colour_model_file)
    assert refused.status_code == 403 and "change_model_code" in refused.json()["detail"]
    assert editor.post(f"/api/trainingrun/{trained_dataset.current_run_id}/promote/").status_code == 200
    viewer = api_as("view_dataset", "view_trainingrun")
    assert viewer.post(f"/api/trainingrun/{trained_dataset.current_run_id}/promote/").status_code == 403


def test_predicting_with_a_version_keeps_the_current_model_loaded(api, trained_dataset, two_versions):
    from serving.prediction import model_cache

    older, newer = two_versions
    image = base64.b64encode(colour_image("red", seed=5)).decode()
    for body in (
        {"dataset": trained_dataset.pk},
        {"run": older.pk},
        {"dataset": trained_dataset.pk},
        {"run": older.pk},
    ):
        response = api.post("/api/test/", {**body, "image": image}, format="json")
        assert response.status_code == 200, response.content
    assert older.pk in model_cache and newer.pk in model_cache
    loads = model_cache.loads
    api.post("/api/test/", {"run": older.pk, "image": image}, format="json")
    api.post("/api/test/", {"dataset": trained_dataset.pk, "image": image}, format="json")
    assert model_cache.loads == loads  # alternating reloads nothing
