"""Pretrained starting points through the services: a run trains from EfficientNet-Lite0's features,
reuses them, fails at once when a backbone's weights are missing, and the `weights` command."""

import io

import keras
import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from ml import backbones, transfer
from ml.images import load_image
from tests.images import COLOURS, colour_image, colour_zip
from training import runs, trainer
from training import services as training
from training.models import Phase, TrainingRun


@pytest.fixture(scope="session")
def lite0_folder(lite0_weights):
    """EfficientNet-Lite0's converted weights, once per test session (shared with the health tests)."""
    return lite0_weights


@pytest.fixture(autouse=True)
def weights_here(settings, lite0_folder, tmp_path, monkeypatch):
    """Lite0's weights are here; the Keras applications' are not, and nothing is ever downloaded."""
    settings.KERASUI_WEIGHTS_DIR = lite0_folder
    settings.KERASUI_WEIGHTS_BASE_URL = ""
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: tmp_path / "keras")


def pretrained_dataset(name="Photos", **options) -> DataSet:
    values = dict(architecture="efficientnet_lite0", image_size=96, epochs=12, batch_size=8, learning_rate=0.01, seed=3)
    values.update(options)
    dataset = DataSet.objects.create(name=name, **values)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(6)))
    return dataset


def train(dataset: DataSet, phases: list | None = None, monkeypatch=None) -> TrainingRun:
    """Train through the trainer; `phases` records each phase the lifecycle is told of, once per change."""
    if monkeypatch is not None:
        real = runs.run_set_phase

        def recording(*, run_id, phase, progress=0.0):
            if not phases or phases[-1] != phase:
                phases.append(phase)
            return real(run_id=run_id, phase=phase, progress=progress)

        monkeypatch.setattr(runs, "run_set_phase", recording)
    run = training.training_run_create(dataset=dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker=runs.this_worker())
    return trainer.training_run_execute(run=run)


def test_a_pretrained_run_trains_a_head_on_lite0_features_and_its_model_predicts(db, monkeypatch, settings, tmp_path):
    from serving import exports

    # The ONNX export is proven in the training process, on the model it holds: no child process.
    monkeypatch.setattr(exports, "export_in_child", lambda *args, **kwargs: pytest.fail("exported in a child"))
    settings.KERASUI_CACHE_DIR = tmp_path / "cache"
    dataset = pretrained_dataset()
    phases = []

    run = train(dataset, phases, monkeypatch)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert phases == [Phase.PREPARING, Phase.FEATURES, Phase.HEAD, Phase.EVALUATING, Phase.SAVING, Phase.EXPORTING]
    # The linear probe: one converged fit (one history row), not the dataset's 12 epochs of Adam.
    assert len(run.history) == 1 and run.metrics["fine_tuned"] is False
    assert run.metrics["head"]["method"] == "linear probe (L-BFGS)"
    # What happened after training, timed; the confidence calibrated on the validation images.
    assert set(run.metrics["phases"]) == {"preparing", "training", "evaluating", "saving", "exporting"}
    assert all(seconds >= 0 for seconds in run.metrics["phases"].values())
    onnx = run.exports["onnx"]
    assert run.serving_engine == "onnxruntime" and onnx["status"] == "ok", run.serving_note
    assert onnx["samples"] == exports.TRAINED_MODEL_SAMPLES and onnx["max_difference"] <= 1e-4
    assert 0 < onnx["seconds"] <= run.metrics["phases"]["exporting"]
    # The backbone's conversion is kept for the next run's head.
    assert len(list((tmp_path / "cache" / "onnx").glob("extractor-*.onnx"))) == 1
    # Three validation images say too little to fit a temperature on.
    assert run.metrics["calibration"] == {
        "temperature": 1.0,
        "note": "3 validation images, fewer than 10: confidence not calibrated",
    }
    assert run.evaluation["validation"]["calibration"]["thresholds"]
    assert run.evaluation["validation"]["count"] == len(run.splits["validation"])
    assert run.checkpoint == ""
    model = keras.saving.load_model(run.model_file.path)
    assert model.input_shape == (None, 96, 96, 3)
    images = np.stack(
        [load_image(colour_image(label, seed=4242), image_size=96, color_mode="rgb") for label in COLOURS]
    )
    predicted = [run.labels[index] for index in model.predict(images, verbose=0).argmax(axis=1)]
    assert predicted == list(COLOURS)


def test_training_again_reuses_the_features_and_a_changed_dataset_computes_new_ones(db, monkeypatch):
    extractors = []
    real = transfer.feature_extractor
    monkeypatch.setattr(transfer, "feature_extractor", lambda *a, **k: extractors.append(1) or real(*a, **k))
    dataset = pretrained_dataset(epochs=2)

    assert train(dataset).status == TrainingRun.Status.SUCCEEDED
    assert train(dataset).status == TrainingRun.Status.SUCCEEDED
    assert len(extractors) == 1

    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(1, seed=99)))
    assert train(dataset).status == TrainingRun.Status.SUCCEEDED
    assert len(extractors) == 2


def test_fine_tuning_follows_the_head_within_the_time_budget(db, monkeypatch):
    dataset = pretrained_dataset(epochs=2, fine_tune_seconds=1, augment_flip="horizontal")
    phases = []

    run = train(dataset, phases, monkeypatch)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert Phase.FINE_TUNE in phases and phases.index(Phase.FINE_TUNE) > phases.index(Phase.HEAD)
    assert run.fine_tune_seconds == 1
    assert len(run.history) >= 2  # the head's row, then at least one (cut short) fine-tuning epoch
    assert "time budget of 1 s" in run.metrics["fine_tune_note"]


def test_missing_backbone_weights_fail_the_run_at_once_naming_the_command(db, settings):
    dataset = pretrained_dataset(architecture="mobilenet_v3_small_imagenet")

    run = train(dataset)

    assert run.status == TrainingRun.Status.FAILED
    assert "python manage.py weights fetch mobilenet_v3_small_imagenet" in run.error
    assert "python manage.py weights import mobilenet_v3_small_imagenet FILE" in run.error
    assert run.phase == ""  # no image was decoded
    assert not settings.KERASUI_CACHE_DIR.exists()


def test_a_pretrained_starting_point_needs_images_of_96_px_or_more(db):
    dataset = DataSet(name="Tiny", architecture="efficientnet_lite0", image_size=64)
    with pytest.raises(ValidationError) as raised:
        dataset.full_clean()
    assert "at least 96" in raised.value.message_dict["image_size"][0]
    DataSet(name="Fine", architecture="efficientnet_lite0", image_size=96).full_clean()


def test_the_api_gives_a_pretrained_dataset_224_px_unless_told_and_refuses_below_96(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)

    created = client.post("/api/dataset/", {"name": "Photos", "architecture": "efficientnet_lite0"}, format="json")
    assert created.status_code == 201 and created.json()["image_size"] == 224
    assert created.json()["fine_tune_seconds"] == 0

    small = client.post(
        "/api/dataset/", {"name": "Small", "architecture": "efficientnet_lite0", "image_size": 64}, format="json"
    )
    assert small.status_code == 400 and "at least 96" in small.json()["image_size"][0]

    points = {row["name"]: row for row in client.get("/api/starting-points/").json()}
    assert points["efficientnet_lite0"]["pretrained"] and points["efficientnet_lite0"]["weights_present"]
    assert points["mobilenet_v3_small_imagenet"]["weights_present"] is False
    assert points["code"]["pretrained"] is False and points["code"]["weights_present"] is None


def test_the_weights_command_lists_fetches_and_imports(tmp_path, capsys):
    call_command("weights")
    listing = capsys.readouterr().out
    assert "efficientnet_lite0" in listing and "present" in listing
    assert "mobilenet_v3_large_imagenet" in listing and "missing" in listing

    call_command("weights", "fetch", "efficientnet_lite0")
    assert "efficientnet_lite0: ready" in capsys.readouterr().out

    with pytest.raises(CommandError, match="weights import efficientnet_b0_imagenet FILE"):
        call_command("weights", "fetch", "efficientnet_b0_imagenet")

    wrong = tmp_path / "efficientnetb0_notop.h5"
    wrong.write_bytes(b"not the weights")
    with pytest.raises(CommandError, match="md5 is not"):
        call_command("weights", "import", "efficientnet_b0_imagenet", str(wrong))
    assert not (tmp_path / "keras" / "models" / "efficientnetb0_notop.h5").exists()


def test_the_admin_says_whether_each_pretrained_starting_points_weights_are_here(admin_client):
    page = admin_client.get("/admin/management/dataset/add/").content.decode()
    assert "EfficientNet-Lite0, pretrained on ImageNet (offline) — weights present" in page
    assert "MobileNetV3-Small, pretrained on ImageNet — weights missing" in page
    assert 'data-pretrained-size="224"' in page


def test_validating_a_pretrained_starting_point_shows_its_layers_or_the_size_it_needs(db):
    from training.services import dataset_model_validate

    dataset = DataSet.objects.create(name="Check", architecture="efficientnet_lite0", image_size=96)
    report = dataset_model_validate(dataset=dataset)
    assert report.ok, report.error
    assert report.layers[0]["name"] == "efficientnet_lite0" and report.layers[-1]["output_shape"] == [None, 2]

    too_small = dataset_model_validate(dataset=dataset, image_size=64)
    assert not too_small.ok and "at least 96" in too_small.error


def test_automatic_tries_the_pretrained_head_and_the_model_code_and_keeps_the_better(db, monkeypatch, settings):
    settings.KERASUI_AUTOMATIC_BACKBONE = "efficientnet_lite0"
    monkeypatch.setattr(trainer, "AUTOMATIC_IMAGE_SIZE", 96)  # 224 px in use; smaller here for speed
    # Time for both quick candidates whatever the machine's load, never enough left for fine-tuning.
    monkeypatch.setattr(trainer, "AUTOMATIC_MIN_FINE_TUNE_SECONDS", 10_000)
    dataset = pretrained_dataset(architecture="auto", image_size=16, epochs=2, auto_seconds=3600)

    run = train(dataset)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    automatic = run.metrics["automatic"]
    names = [candidate["name"] for candidate in automatic["candidates"]]
    assert names == ["EfficientNet-Lite0, head only", "model code, from scratch", "EfficientNet-Lite0, fine-tuned"]
    head, code, tuned = automatic["candidates"]
    assert head["tried"] and code["tried"] and not tuned["tried"]
    # Fine-tuning starts from the head: not tried when the code led, else for want of time.
    expected = "budget" if head.get("winner") else "beat the head by cross-validation"
    assert expected in tuned["note"]
    assert all(candidate["seconds"] >= 0 and candidate["val_accuracy"] is not None for candidate in (head, code))
    winner = next(candidate for candidate in automatic["candidates"] if candidate.get("winner"))
    assert automatic["winner"] == winner["name"] and automatic["reason"]
    # Six images a label: a small dataset, compared by repeated cross-validation, the head on every fold.
    assert automatic["measure"].startswith("repeated stratified cross-validation")
    assert head["cross_validation"]["folds"] > code["cross_validation"]["folds"] >= 1
    assert 0 <= code["cross_validation"]["mean"] <= 1 and head["cross_validation"]["spread"] >= 0
    assert "fold(s) every candidate was scored on" in automatic["reason"]
    # The run's snapshot is the winner's, so prediction feeds its model what it takes.
    assert (run.architecture, run.image_size) == (winner["architecture"], winner["image_size"])
    model = keras.saving.load_model(run.model_file.path)
    assert model.input_shape == (None, run.image_size, run.image_size, 3)


def _estimated_at(seconds: float, monkeypatch, estimates: list):
    """The head's real estimate (a sample timed), then said to cost `seconds`: as if the images were many."""
    real = trainer._estimate_head

    def estimate(run, backbone, items):
        measured = real(run, backbone, items)
        estimates.append(measured)
        if measured is not None:
            measured.seconds = seconds
        return measured

    monkeypatch.setattr(trainer, "_estimate_head", estimate)


def test_automatic_skips_the_head_whose_features_would_not_fit_in_the_budget_and_the_model_code_wins(
    db, monkeypatch, settings, tmp_path
):
    settings.KERASUI_AUTOMATIC_BACKBONE = "efficientnet_lite0"
    settings.KERASUI_CACHE_DIR = tmp_path / "cache"
    monkeypatch.setattr(trainer, "AUTOMATIC_IMAGE_SIZE", 96)
    monkeypatch.setattr(trainer, "AUTOMATIC_ESTIMATE_IMAGES", 4)
    estimates = []
    _estimated_at(10_000.0, monkeypatch, estimates)
    dataset = pretrained_dataset(architecture="auto", image_size=16, epochs=1, auto_seconds=600)

    run = train(dataset)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    # Measured on 4 images spread over the 12, before any 96 px image cache of them all was made.
    assert [estimate.sample for estimate in estimates] == [4] and estimates[0].images == len(run.labels) * 6
    assert all(np.load(path, mmap_mode="r").shape[1] == 16 for path in (tmp_path / "cache").glob("*.npy"))
    assert not (tmp_path / "cache" / "features").exists() or not list((tmp_path / "cache" / "features").iterdir())
    automatic = run.metrics["automatic"]
    head, tuned, code = automatic["candidates"]
    assert head["name"] == "EfficientNet-Lite0, head only" and not head["tried"]
    assert "would take about 2.8 h (measured on 4 of them), more than the" in head["note"]
    assert "of the 600 s budget; raise the automatic time budget to try it" in head["note"]
    assert not tuned["tried"] and "which was not tried" in tuned["note"]
    assert code["tried"] and code.get("winner") and automatic["winner"] == code["name"]
    assert (run.architecture, run.image_size) == ("code", 16)


def test_automatic_tries_the_head_whose_features_are_cached_without_sampling_again(db, monkeypatch, settings, tmp_path):
    settings.KERASUI_AUTOMATIC_BACKBONE = "efficientnet_lite0"
    settings.KERASUI_CACHE_DIR = tmp_path / "cache"
    monkeypatch.setattr(trainer, "AUTOMATIC_IMAGE_SIZE", 96)
    monkeypatch.setattr(trainer, "AUTOMATIC_MIN_FINE_TUNE_SECONDS", 10_000)
    dataset = pretrained_dataset(architecture="auto", image_size=16, epochs=1, auto_seconds=3600)
    first = train(dataset)
    assert first.status == TrainingRun.Status.SUCCEEDED, first.error
    assert first.metrics["automatic"]["candidates"][0]["tried"]  # its features are cached now

    # However costly the estimate would say: the features cached cost nothing, and no image is sampled.
    estimates = []
    _estimated_at(10_000.0, monkeypatch, estimates)
    monkeypatch.setattr(trainer, "load_image", lambda *args, **kwargs: pytest.fail("sampled though cached"))
    run = train(dataset)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert estimates == [None]
    head = run.metrics["automatic"]["candidates"][0]
    assert head["name"] == "EfficientNet-Lite0, head only" and head["tried"] and head["val_accuracy"] is not None


def test_new_datasets_start_automatic_in_the_admin_and_the_api(db):
    assert DataSet().architecture == "auto"
    field = DataSet._meta.get_field("architecture")
    assert field.default == "auto" and ("auto", field.choices[0][1]) == field.choices[0]
