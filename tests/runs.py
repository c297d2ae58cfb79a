"""Succeeded training runs for the tests, without training: a trained model file copied in."""

import json
import shutil
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from management.models import DataSet, RunData, TrainingRun
from training.services import training_run_create


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
        "progress": 1.0,
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


def split_report(item_ids: list[int], true: list[int], predicted: list[int], labels: list[str]) -> dict:
    """The evaluation report of a split whose images `item_ids` have labels `true` and were predicted
    `predicted` (indices into `labels`), as the trainer writes it (ml.evaluate), with confidences of 0.9."""
    import numpy as np

    from ml.evaluate import classification_report

    probabilities = np.full((len(true), len(labels)), 0.1 / max(1, len(labels) - 1))
    probabilities[np.arange(len(true)), predicted] = 0.9
    return classification_report(np.array(true), probabilities, label_names=labels, item_ids=item_ids)


def store_results(run: TrainingRun, *, splits: dict | None = None, evaluation: dict | None = None, **fields) -> None:
    """Write a run's results where the services keep them: the splits and the evaluation's per-image
    predictions in its RunData row, the evaluation's summary and the split counts (and `fields`) on the run."""
    from training import runs

    if splits is not None:
        runs.run_splits_save(run=run, splits=splits)
    if evaluation is not None:
        fields["evaluation"], predictions = runs.evaluation_split(evaluation)
        RunData.objects.update_or_create(run_id=run.pk, defaults={"predictions": predictions})
    TrainingRun.objects.filter(pk=run.pk).update(**fields)


def finish_run(
    dataset: DataSet,
    *,
    evaluation: dict,
    splits: dict | None = None,
    history: list[dict] | None = None,
    **snapshot,
) -> TrainingRun:
    """A run of `dataset` that ends as the trainer ends one (the lifecycle's `run_succeed`, which applies the
    promotion policy), with the given evaluation and splits and a (fake) model file, without training.
    `snapshot` overrides the options the run copied from its dataset (its model code, epochs…)."""
    from training import runs

    run = training_run_create(dataset=dataset, enqueue=False)
    store_results(run, splits=splits or {}, started_at=timezone.now(), **snapshot)
    runs.run_claim(run_id=run.pk, worker="test:1")
    run = TrainingRun.objects.get(pk=run.pk)
    history = history or [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.5}]
    assert runs.run_succeed(
        run=run,
        evaluation=evaluation,
        history=history,
        epoch=len(history),
        metrics={f"val_{key}": value for key, value in evaluation.get("validation", {}).items() if key in {"accuracy"}},
        model_file=f"models/run_{run.pk}.keras",
    )
    return TrainingRun.objects.get(pk=run.pk)


def download(client, url: str):
    """GET a model download; when it answers 202 (an export job), run that job here, as its process would,
    and GET it again: the file, or the refusal."""
    from jobs.process import job_execute

    response = client.get(url)
    if response.status_code != 202:
        return response
    job = response.json()
    assert response["Location"] == job["url"] and job["status"] == "queued"
    ended = job_execute(kind="export", job_id=job["id"], worker="test:1")
    assert ended.status in {"succeeded", "failed"}, ended.error
    return client.get(url)


def imported(client, response) -> dict:
    """An upload answered 202 with its import job: run that job here, as its process would, and return
    the job as the API shows it once it ended (status, report)."""
    from jobs.process import job_execute

    assert response.status_code == 202, response.content[:500]
    job = response.json()
    assert response["Location"] == job["url"] and job["status"] == "queued"
    job_execute(kind="import", job_id=job["id"], worker="test:1")
    return client.get(job["url"]).json()


def run_queued_imports() -> list:
    """Run every queued zip import here, as their processes would; the jobs as they ended."""
    from datasets.models import ImportJob
    from jobs.process import job_execute

    return [
        job_execute(kind="import", job_id=job_id, worker="test:1")
        for job_id in ImportJob.objects.filter(status="queued").order_by("id").values_list("pk", flat=True)
    ]
