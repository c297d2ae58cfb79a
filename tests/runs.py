"""Succeeded training runs for the tests, without training: a trained model file copied in."""

import json
import shutil
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from management.models import DataSet, TrainingRun
from management.services.training import training_run_create


def install_model(dataset: DataSet, model_file: Path, *, labels: list[str] | None = None) -> TrainingRun:
    """Give `dataset` a succeeded run whose model is a copy of `model_file`, and make it current.

    When a proven ONNX export of the same model lies beside it (`<name>.onnx`, see conftest), it is
    copied in as the run's export and the run is served by ONNX Runtime, as a trained run would be;
    otherwise the serving engine is decided when the model is first used.
    """
    run = training_run_create(dataset=dataset, enqueue=False)
    name = f"models/run_{run.pk}.keras"
    target = Path(settings.MEDIA_ROOT) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, target)
    fields = {}
    onnx = Path(model_file).with_suffix(".onnx")
    if onnx.is_file():
        export = f"exports/run_{run.pk}/model.onnx"
        (Path(settings.MEDIA_ROOT) / export).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx, Path(settings.MEDIA_ROOT) / export)
        report = json.loads(onnx.with_suffix(".onnx.json").read_text())
        proof = {key: report[key] for key in ("max_difference", "tolerance", "samples", "size", "seconds", "runtime")}
        proof.update(status="ok", file=export)
        fields.update(exports={"onnx": proof}, serving_engine="onnxruntime", serving_note="proven beside the model")
    fields |= {
        "status": TrainingRun.Status.SUCCEEDED,
        "progress": 100,
        "model_file": name,
        "metrics": {"val_accuracy": 1.0},
        "started_at": timezone.now(),
        "finished_at": timezone.now(),
    }
    if labels is not None:
        fields["labels"] = labels
    TrainingRun.objects.filter(pk=run.pk).update(**fields)
    dataset.current_run = TrainingRun.objects.get(pk=run.pk)
    dataset.save(update_fields=["current_run", "updated_at"])
    return dataset.current_run
