"""A trained run's confidence is calibrated on its validation images, and the saved model carries it."""

import io

import keras
import numpy as np

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_import_zip
from ml.images import load_image
from tests.images import colour_zip
from training import runs, trainer
from training import services as training
from training.models import TrainingRun


def execute(dataset: DataSet) -> TrainingRun:
    run = training.training_run_create(dataset=dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker=runs.this_worker())
    return trainer.training_run_execute(run=run)


def test_the_temperature_fitted_on_the_validation_images_is_in_the_saved_model(db):
    dataset = DataSet.objects.create(
        name="Calibrated", architecture="code", image_size=16, epochs=2, batch_size=8, validation_split=0.3, seed=4
    )
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(12)))

    run = execute(dataset)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    calibration = run.metrics["calibration"]
    assert calibration["fitted_on"] == "12 validation images"
    assert calibration["measured_on"] == "12 validation images (those it was fitted on)"
    assert calibration["ece_after"] == run.evaluation["validation"]["calibration"]["ece"]
    assert calibration["temperature"] != 1.0  # two epochs on 24 images: far from calibrated
    # The confidences the evaluation recorded are the saved model's own: the temperature is folded in.
    model = keras.saving.load_model(run.model_file.path)
    recorded = {item: confidence for item, _, confidence in run.predictions["validation"]}
    items = DataSetItem.objects.filter(pk__in=recorded).order_by("pk")
    arrays = []
    for item in items:
        with item.image.open("rb") as file:
            arrays.append(load_image(file.read(), image_size=16, color_mode="rgb"))
    images = np.stack(arrays)
    confidences = model.predict(images, verbose=0).max(axis=1)
    np.testing.assert_allclose(confidences, [recorded[item.pk] for item in items], atol=1e-3)
