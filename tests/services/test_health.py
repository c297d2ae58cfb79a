"""Dataset health through the services: a check runs to its end as a job (in this process), its
report has every section and finds what was planted, and the page's actions change the dataset."""

import io

import pytest
from django.core.files.base import ContentFile

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_import_zip, dataset_item_create
from health import services as health
from health.models import HealthCheck
from jobs import lifecycle
from jobs.process import job_execute
from management.errors import ServiceError
from ml import backbones
from tests.images import colour_image, colour_zip

SECTIONS = {"label_issues", "duplicates", "leaks", "outliers", "balance", "method", "seconds"}


@pytest.fixture
def planted(db, settings, lite0_weights, tmp_path, monkeypatch):
    """Three colours × 8 images, one red image labelled blue, and an exact copy of a green one."""
    settings.KERASUI_WEIGHTS_DIR = lite0_weights
    settings.KERASUI_WEIGHTS_BASE_URL = ""
    settings.KERASUI_PREPROCESS_WORKERS = 1
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: tmp_path / "keras")
    dataset = DataSet.objects.create(name="Health", image_size=16, epochs=1, batch_size=8)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(8)))
    wrong = dataset_item_create(dataset=dataset, label="blue", file=ContentFile(colour_image("red", seed=999)))
    copied = DataSetItem.objects.filter(dataset=dataset, label="green").first()
    with copied.image.open("rb") as file:
        copy = dataset_item_create(dataset=dataset, label="green", file=ContentFile(file.read()))
    return dataset, wrong, copied, copy


def run_check(dataset) -> HealthCheck:
    check, created = health.health_check_start(dataset=dataset, enqueue=False)
    assert created
    return job_execute(kind="health", job_id=check.pk, worker="test:1")


def test_a_check_runs_to_done_finds_the_planted_label_error_and_duplicate_and_the_next_omits_kept_ones(planted):
    dataset, wrong, copied, copy = planted
    check = run_check(dataset)
    assert check.status == "succeeded", check.error
    assert check.progress == 1.0
    report = check.report
    assert SECTIONS <= set(report)
    assert "EfficientNet-Lite0" in report["method"]
    assert report["label_issues"][0]["item"] == wrong.pk
    assert report["label_issues"][0]["given"] == "blue" and report["label_issues"][0]["suggested"] == "red"
    assert len(check.label_quality) == 26 and "label_quality" not in report
    assert {"items": sorted([copied.pk, copy.pk]), "exact": True, "labels": ["green"]} in report["duplicates"]
    assert report["balance"]["counts"] == {"blue": 9, "green": 9, "red": 8}

    health.health_dismiss(dataset=dataset, item_ids=[wrong.pk], kind="label")
    health.health_dismiss(dataset=dataset, item_ids=[copied.pk, copy.pk], kind="duplicate")
    again = run_check(dataset)  # the features are cached now
    assert again.status == "succeeded"
    assert wrong.pk not in [issue["item"] for issue in again.report["label_issues"]]
    assert again.report["duplicates"] == []


def test_a_second_check_while_one_is_queued_returns_the_same_check(planted):
    dataset = planted[0]
    first, created = health.health_check_start(dataset=dataset, enqueue=False)
    second, created_again = health.health_check_start(dataset=dataset, enqueue=False)
    assert created and not created_again and first.pk == second.pk


def test_a_cancelled_check_stops_and_keeps_no_report(planted, monkeypatch):
    dataset = planted[0]
    check, _ = health.health_check_start(dataset=dataset, enqueue=False)
    from health import job as health_job

    real = health_job.ml_health.image_hashes

    def cancel_while_hashing(path, **options):
        health.health_check_cancel(check=HealthCheck.objects.get(pk=check.pk))
        return real(path, **options)

    monkeypatch.setattr(health_job.ml_health, "image_hashes", cancel_while_hashing)
    ended = job_execute(kind="health", job_id=check.pk, worker="test:1")
    assert ended.status == "cancelled" and ended.report == {}


def a_done_check(dataset, wrong, copied, copy) -> HealthCheck:
    """A check as the job leaves it, its report naming the planted images."""
    issue = {"item": wrong.pk, "given": "blue", "suggested": "red", "confidence": 0.9, "quality": 0.05}
    return HealthCheck.objects.create(
        dataset=dataset,
        status="succeeded",
        progress=1.0,
        report={
            "label_issues": [issue],
            "duplicates": [{"items": [copied.pk, copy.pk], "exact": True, "labels": ["green"]}],
            "outliers": [{"item": copy.pk, "label": "green", "score": 9.0}],
            "leaks": {"run": None, "groups": []},
        },
    )


def test_the_report_hides_what_was_relabelled_deleted_or_kept(planted):
    dataset, wrong, copied, copy = planted
    check = a_done_check(*planted)
    current = health.health_report_current(check=check)
    assert [issue["item"] for issue in current["label_issues"]] == [wrong.pk]
    assert current["label_issues"][0]["image"] == wrong.image.url

    health.health_relabel(dataset=dataset, item_id=wrong.pk, label="red")
    assert DataSetItem.objects.get(pk=wrong.pk).label == "red"
    health.health_dismiss(dataset=dataset, item_ids=[copy.pk], kind="outlier")
    current = health.health_report_current(check=check)
    assert current["label_issues"] == [] and current["outliers"] == [] and len(current["duplicates"]) == 1

    health.health_keep_one(dataset=dataset, keep=copied.pk, item_ids=[copied.pk, copy.pk])
    assert not DataSetItem.objects.filter(pk=copy.pk).exists() and DataSetItem.objects.filter(pk=copied.pk).exists()
    assert health.health_report_current(check=check)["duplicates"] == []


def test_actions_refuse_items_of_another_dataset(planted):
    dataset = planted[0]
    other = DataSet.objects.create(name="Other")
    stranger = dataset_item_create(dataset=other, label="x", file=ContentFile(colour_image("red", seed=1)))
    with pytest.raises(ServiceError):
        health.health_delete(dataset=dataset, item_ids=[stranger.pk])
    with pytest.raises(ServiceError):
        health.health_dismiss(dataset=dataset, item_ids=[stranger.pk], kind="label")
    assert DataSetItem.objects.filter(pk=stranger.pk).exists()


def test_without_a_backbone_the_models_own_code_is_trained_per_fold(db, settings):
    settings.KERASUI_HEALTH_BACKBONE = ""
    dataset = DataSet.objects.create(name="Small", image_size=16, epochs=1, batch_size=8)
    for number in range(4):
        dataset_item_create(dataset=dataset, label="red", file=ContentFile(colour_image("red", seed=number)))
    for number in range(2):  # two images: two folds
        dataset_item_create(dataset=dataset, label="blue", file=ContentFile(colour_image("blue", seed=number)))
    check = run_check(dataset)
    assert check.status == "succeeded", check.error
    assert "model code" in check.report["method"] and check.report["folds"] == 2
    assert len(check.label_quality) == 6


def test_a_configured_backbone_without_weights_falls_back_to_the_model_code_at_the_datasets_size(
    db, settings, tmp_path, monkeypatch
):
    # Keras' ImageNet weights for MobileNetV3: not in this (empty) cache, and never downloaded.
    settings.KERASUI_HEALTH_BACKBONE = "mobilenet_v3_small_imagenet"
    settings.KERASUI_HEALTH_IMAGE_SIZE = 96
    settings.KERASUI_WEIGHTS_DIR = tmp_path / "no-weights"
    settings.KERASUI_WEIGHTS_BASE_URL = ""
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: tmp_path / "keras")
    dataset = DataSet.objects.create(name="No weights", image_size=16, epochs=1, batch_size=8)
    for number in range(4):
        dataset_item_create(dataset=dataset, label="red", file=ContentFile(colour_image("red", seed=number)))
        dataset_item_create(dataset=dataset, label="blue", file=ContentFile(colour_image("blue", seed=number)))
    check = run_check(dataset)
    assert check.status == "succeeded", check.error
    report = check.report
    assert "model code trained per fold at 16 px" in report["method"]
    assert "mobilenet_v3_small_imagenet has no weights here" in report["method"]
    assert report["fallback"].startswith("the configured backbone mobilenet_v3_small_imagenet has no weights here")
    assert len(check.label_quality) == 8 and report["folds"] >= 2


def test_a_check_whose_process_died_is_failed_by_the_watchdog_and_a_new_one_can_start(planted):
    dataset = planted[0]
    lost, _ = health.health_check_start(dataset=dataset, enqueue=False)
    lifecycle.job_claim(kind="health", job_id=lost.pk, worker=lifecycle.this_worker(2**22 + 12345))  # no such pid
    new, created = health.health_check_start(dataset=dataset, enqueue=False)
    assert created and new.pk != lost.pk
    lost.refresh_from_db()
    assert lost.status == "failed" and "health check's process stopped before it finished" in lost.error
