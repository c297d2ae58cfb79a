"""Which engine serves a version: ONNX Runtime on its proven export, else Keras, and the run says why."""

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from management.models import TrainingRun
from ml.engines import OnnxPredictor
from ml.export import ExportReport
from ml.images import load_image
from serving import exports
from serving.prediction import model_cache, prediction_metadata, prediction_predict
from serving.services import onnx_name, serving_prepare_run
from tests.images import COLOURS, colour_image
from tests.runs import install_model


@pytest.fixture
def pending_run(colour_dataset, colour_model_file, tmp_path):
    """A current version whose engine is not decided yet, as an imported one is."""
    import shutil

    bare = tmp_path / "bare" / "colours.keras"
    bare.parent.mkdir()
    shutil.copy(colour_model_file, bare)  # no proven ONNX beside it
    run = install_model(colour_dataset, bare)
    assert run.serving_engine == ""
    return run


def _refused(model_path, *, target, **kwargs):
    error = "the onnx export does not load or run in ONNX Runtime: InvalidGraph: a Normalization constant"
    return ExportReport(ok=False, tolerance=1e-4, samples=16, runtime="ONNX Runtime", error=error)


def test_a_version_first_used_gets_its_onnx_export_proven_and_is_served_by_onnx_runtime(pending_run):
    dataset = pending_run.dataset
    images = [(label, colour_image(label, seed=5_000 + n)) for label in COLOURS for n in range(2)]
    predictions = prediction_predict(dataset=dataset, images=images)
    assert [p.label for p in predictions] == [label for label, _ in images]
    run = TrainingRun.objects.get(pk=pending_run.pk)
    assert run.serving_engine == "onnxruntime"
    assert "proven against the Keras model on 16 images of the run" in run.serving_note
    assert run.exports["onnx"]["status"] == "ok" and default_storage.exists(onnx_name(run))
    assert isinstance(model_cache.get(run), OnnxPredictor)

    # The same answers as the Keras model, within the serving tolerance.
    import keras

    model = keras.saving.load_model(run.model_file.path, compile=False)
    batch = np.stack([load_image(data, image_size=16, color_mode="rgb") for _, data in images])
    expected = keras.ops.convert_to_numpy(model(batch.astype(np.float32), training=False))
    answered = np.array([[p.probabilities[label] for label in run.labels] for p in predictions])
    assert np.abs(answered - expected).max() <= 1e-5 + 1e-6  # answers are rounded to 6 decimals


def test_a_model_whose_export_fails_is_served_by_keras_and_says_so(pending_run, monkeypatch, admin_client):
    from ml.inference import Predictor

    monkeypatch.setattr(exports, "export_in_child", _refused)
    dataset = pending_run.dataset
    prediction = prediction_predict(dataset=dataset, images=[("red", colour_image("red", seed=1))])[0]
    assert prediction.label == "red"
    run = TrainingRun.objects.get(pk=pending_run.pk)
    assert run.serving_engine == "keras" and isinstance(model_cache.get(run), Predictor)
    assert run.serving_note.startswith("served by Keras: the onnx export does not load or run in ONNX Runtime")

    metadata = admin_client.get(f"/api/dataset/{dataset.pk}/model/metadata/").json()
    assert metadata["engine"] == "keras" and "does not load or run in ONNX Runtime" in metadata["engine_note"]
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    assert "served by" in page and "Keras (fallback" in page and "does not load or run in ONNX Runtime" in page


def test_an_export_further_from_keras_than_the_serving_tolerance_is_served_by_keras(pending_run, monkeypatch):
    def close_but_not_enough(model_path, *, target, **kwargs):
        with open(target, "wb") as file:
            file.write(b"an onnx file")
        return ExportReport(ok=True, max_difference=5e-5, tolerance=1e-4, samples=16, size=12, runtime="ONNX Runtime")

    monkeypatch.setattr(exports, "export_in_child", close_but_not_enough)
    run = serving_prepare_run(run=pending_run)
    assert run.serving_engine == "keras"
    assert "differs from the Keras model by up to 5e-05" in run.serving_note and "tolerance 1e-05" in run.serving_note
    # The export itself passed its own (download) check and stays downloadable.
    assert run.exports["onnx"]["status"] == "ok"


def test_the_keras_setting_serves_every_version_with_keras(pending_run, trained_dataset, settings, monkeypatch):
    from ml.inference import Predictor

    settings.KERASUI_SERVING_ENGINE = "keras"
    monkeypatch.setattr(exports, "export_in_child", lambda *args, **kwargs: pytest.fail("no export needed"))
    run = serving_prepare_run(run=pending_run)
    assert run.serving_engine == "keras" and "KERASUI_SERVING_ENGINE" in run.serving_note
    # A version proven for ONNX Runtime is served by Keras too in a process with this setting, and says so.
    proven = trained_dataset.current_run
    assert proven.serving_engine == "onnxruntime" and isinstance(model_cache.get(proven), Predictor)
    metadata = prediction_metadata(dataset=trained_dataset).as_dict()
    assert metadata["engine"] == "keras" and "KERASUI_SERVING_ENGINE" in metadata["engine_note"]


def test_metadata_names_the_engine_and_its_proof(trained_dataset):
    body = prediction_metadata(dataset=trained_dataset).as_dict()
    assert body["engine"] == "onnxruntime" and body["engine_note"]


def test_a_missing_onnx_export_is_made_again_from_the_model(trained_dataset):
    run = trained_dataset.current_run
    default_storage.delete(onnx_name(run))
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (250, 5, 5)).save(buffer, "PNG")
    assert prediction_predict(dataset=trained_dataset, images=[("x", buffer.getvalue())])[0].label == "red"
    assert default_storage.exists(onnx_name(run))
    assert TrainingRun.objects.get(pk=run.pk).serving_engine == "onnxruntime"


@pytest.fixture
def slots_taken(settings, tmp_path):
    """Every slot for model jobs (validations, imports, exports) held by other work."""
    from contextlib import ExitStack

    from jobs.budgets import model_job_slot

    settings.KERASUI_MAX_CONCURRENT_JOBS = 1
    settings.KERASUI_LOCK_DIR = tmp_path / "locks"
    with ExitStack() as stack:
        stack.enter_context(model_job_slot(what="another export"))
        yield


def test_a_busy_machine_leaves_a_version_undecided_rather_than_served_by_keras(pending_run, slots_taken, monkeypatch):
    from jobs.budgets import TooManyJobs
    from serving import services as serving

    monkeypatch.setattr(serving, "SLOT_POLL_SECONDS", 0.01)
    # A request: 429, and nothing recorded.
    with pytest.raises(TooManyJobs):
        serving_prepare_run(run=pending_run)
    # The training process waits for a slot, then leaves the decision to the version's first use.
    run = serving_prepare_run(run=pending_run, wait_for_slot=0.05)
    assert run.serving_engine == ""
    stored = TrainingRun.objects.get(pk=pending_run.pk)
    assert stored.serving_engine == "" and stored.serving_note == "" and "onnx" not in stored.exports


def test_a_prediction_that_would_prove_an_export_while_every_slot_is_taken_is_a_429(
    pending_run, slots_taken, admin_user
):
    import base64

    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(admin_user)
    image = base64.b64encode(colour_image("red", seed=1)).decode()
    response = api.post("/api/test/", {"dataset": pending_run.dataset_id, "image": image}, format="json")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "exporting to onnx has to wait" in response.json()["detail"][0]
    assert TrainingRun.objects.get(pk=pending_run.pk).serving_engine == ""
