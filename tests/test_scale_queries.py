"""A page or API answer runs as many queries on a dataset of thousands of images as on one of a few
dozen, and no list reads a run's per-image data (issue 24). The images are rows only: nothing here
decodes an image, and their files never exist (thumbnails are links)."""

from collections import Counter

import pytest
from rest_framework.test import APIClient

from datasets.services import label_counts_add
from management.models import DataSet, DataSetItem, TrainingRun
from tests.runs import split_report, store_results
from training.services import training_run_create

LABELS = ["ankle boot", "bag", "coat", "dress", "shirt"]
LARGE = 3000


def add_images(dataset: DataSet, count: int) -> None:
    """`count` more rows of images, labelled in turn, counted as the dataset service counts them."""
    start = dataset.items.count()
    items = [
        DataSetItem(dataset=dataset, label=LABELS[n % len(LABELS)], image=f"datasets/{dataset.pk}/i{n:07d}.png")
        for n in range(start, start + count)
    ]
    DataSetItem.objects.bulk_create(items, batch_size=1000)
    label_counts_add(changes=Counter((dataset.pk, item.label) for item in items))


def finish_current_run(dataset: DataSet) -> TrainingRun:
    """A succeeded current run whose splits and evaluation cover every image, as a trained run's do."""
    run = training_run_create(dataset=dataset, enqueue=False)
    ids = list(dataset.items.order_by("id").values_list("pk", flat=True))
    labels = sorted(LABELS)
    by_id = dict(dataset.items.values_list("pk", "label"))
    validation = ids[::5]
    true = [labels.index(by_id[item]) for item in validation]
    predicted = [(index + (n % 7 == 0)) % len(labels) for n, index in enumerate(true)]
    held_out = set(validation)
    splits = {"train": [item for item in ids if item not in held_out], "validation": validation, "test": []}
    store_results(
        run,
        splits=splits,
        evaluation={"validation": split_report(validation, true, predicted, labels)},
        status=TrainingRun.Status.SUCCEEDED,
        progress=1.0,
        labels=labels,
        metrics={"val_accuracy": 0.85},
        history=[{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.85}],
    )
    dataset.current_run_id = run.pk
    dataset.save(update_fields=["current_run"])
    return run


def pages(dataset: DataSet, run: TrainingRun) -> dict[str, str]:
    return {
        "admin home": "/admin/",
        "dataset list": "/admin/management/dataset/",
        "dataset page": f"/admin/management/dataset/{dataset.pk}/change/",
        "image list": f"/admin/management/datasetitem/?dataset__id__exact={dataset.pk}",
        "image list by label": f"/admin/management/datasetitem/?dataset__id__exact={dataset.pk}&label=bag",
        "run list": "/admin/management/trainingrun/",
        "run page": f"/admin/management/trainingrun/{run.pk}/change/",
        "health page": f"/admin/management/dataset/{dataset.pk}/health/",
        "labelling page": f"/admin/management/dataset/{dataset.pk}/label/",
        "Test page": "/admin/management/dataset/test/",
        "confusion cell": f"/admin/management/trainingrun/{run.pk}/confusion/validation/0/0/",
        "API datasets": "/api/dataset/",
        "API dataset": f"/api/dataset/{dataset.pk}/",
        "API images": f"/api/datasetitem/?dataset={dataset.pk}",
        "API runs": "/api/trainingrun/",
        "API run": f"/api/trainingrun/{run.pk}/",
        "API suggestions": f"/api/dataset/{dataset.pk}/suggestions/",
    }


# Pages that list datasets or runs: none of them may read an image row or a run's per-image data.
LISTS = {"admin home", "dataset list", "run list", "API datasets", "API runs"}


@pytest.fixture
def clients(admin_client, admin_user):
    api = APIClient()
    api.force_authenticate(admin_user)
    return admin_client, api


def get(clients, url: str):
    admin, api = clients
    response = (api if url.startswith("/api/") else admin).get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response


def test_no_page_or_answer_runs_more_queries_on_thousands_of_images(clients, django_assert_max_num_queries, db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    dataset = DataSet.objects.create(name="Fashion", image_size=28, color_mode="grayscale")
    DataSet.objects.create(name="Empty")
    add_images(dataset, 50)
    run = finish_current_run(dataset)
    urls = pages(dataset, run)
    small = {}
    for name, url in urls.items():
        get(clients, url)  # first request: sessions, caches
        with CaptureQueriesContext(connection) as queries:
            get(clients, url)
        small[name] = len(queries)

    add_images(dataset, LARGE)
    run = finish_current_run(dataset)
    urls = pages(dataset, run)
    for name, url in urls.items():
        get(clients, url)
        with django_assert_max_num_queries(small[name]) as queries:
            get(clients, url)
        if name.startswith("image list"):
            # Paged by the images' own index, never sorted through a join (a sort of every image per page).
            paged = [query["sql"] for query in queries.captured_queries if "LIMIT 60" in query["sql"]]
            assert paged and not any('ORDER BY "management_dataset"' in sql for sql in paged), (name, paged)
        if name in LISTS:
            sql = " ".join(query["sql"] for query in queries.captured_queries)
            assert "management_datasetitem" not in sql, name
            assert "management_rundata" not in sql and '"evaluation"' not in sql, name


def test_the_dataset_list_and_answer_count_the_images_without_reading_them(clients, db):
    dataset = DataSet.objects.create(name="Fashion")
    add_images(dataset, LARGE)
    html = get(clients, "/admin/management/dataset/").content.decode()
    assert f">{LARGE}<" in html and "bag (600)" in html
    answer = get(clients, f"/api/dataset/{dataset.pk}/").json()
    assert answer["item_count"] == LARGE
    assert get(clients, "/api/dataset/").json()["results"][0]["item_count"] == LARGE


def test_the_run_list_answers_counts_and_leaves_the_per_image_data_to_the_runs_own_answer(clients, db):
    dataset = DataSet.objects.create(name="Fashion")
    add_images(dataset, 500)
    run = finish_current_run(dataset)
    listed = get(clients, "/api/trainingrun/").json()["results"][0]
    assert listed["split_counts"] == {"train": 400, "validation": 100, "test": 0}
    assert "evaluation" not in listed and "splits" not in listed
    detail = get(clients, f"/api/trainingrun/{run.pk}/").json()
    assert len(detail["splits"]["validation"]) == 100 and detail["evaluation"]["validation"]["count"] == 100


def test_the_run_page_shows_the_most_confident_mistakes_and_a_cell_lists_its_images_a_page_at_a_time(clients, db):
    dataset = DataSet.objects.create(name="Fashion")
    add_images(dataset, 2000)
    run = finish_current_run(dataset)
    report = TrainingRun.objects.get(pk=run.pk).evaluation["validation"]
    assert report["misclassified_count"] > 24
    html = get(clients, f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    assert html.count("data-relabel-item=") == 24
    assert f"Misclassified: {report['misclassified_count']} (the 24 most confident shown" in html

    cell = f"/admin/management/trainingrun/{run.pk}/confusion/validation/0/0/"
    assert report["confusion_matrix"][0][0] > 60
    first = get(clients, cell).content.decode()
    assert first.count("data-cell-item=") == 60 and '?page=2">next' in first
    last = get(clients, f"{cell}?page=99").content.decode()
    assert 0 < last.count("data-cell-item=") <= 60 and "previous" in last


def test_the_health_page_reads_only_the_images_its_report_names_and_pages_its_suspects(clients, db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from health.models import HealthCheck

    dataset = DataSet.objects.create(name="Fashion")
    add_images(dataset, LARGE)
    ids = list(dataset.items.order_by("id").values_list("pk", "label")[:120])
    issues = [
        {"item": pk, "given": label, "suggested": "bag" if label != "bag" else "coat", "confidence": 0.9, "quality": 0}
        for pk, label in ids
    ]
    HealthCheck.objects.create(
        dataset=dataset,
        status=HealthCheck.Status.SUCCEEDED,
        progress=1,
        report={"images": LARGE, "method": "test", "label_issues": issues, "duplicates": [], "outliers": []},
    )
    url = f"/admin/management/dataset/{dataset.pk}/health/"
    with CaptureQueriesContext(connection) as queries:
        html = get(clients, url).content.decode()
    reads = [query["sql"] for query in queries.captured_queries if 'FROM "management_datasetitem"' in query["sql"]]
    assert reads and all('"management_datasetitem"."id" IN' in sql for sql in reads), reads
    assert "Suspected label errors (120)" in html
    assert html.count(f'alt="image {ids[0][0]}"') == 1 and f'alt="image {ids[50][0]}"' not in html
    assert "Suspects 1–50 of 120" in html and '?page=2#label-issues">next' in html
    last = get(clients, f"{url}?page=3").content.decode()
    assert f'alt="image {ids[119][0]}"' in last and "Suspects 101–120 of 120" in last


def test_the_health_page_makes_image_urls_for_its_page_of_suspects_only(clients, db):
    from unittest import mock

    from management.models import HealthCheck

    dataset = DataSet.objects.create(name="Fashion")
    add_images(dataset, 600)
    ids = list(dataset.items.order_by("id").values_list("pk", "label")[:500])
    issues = [{"item": pk, "given": label, "suggested": "x", "confidence": 0.9, "quality": 0} for pk, label in ids]
    HealthCheck.objects.create(
        dataset=dataset,
        status=HealthCheck.Status.SUCCEEDED,
        progress=1,
        report={"images": 600, "method": "test", "label_issues": issues, "duplicates": [], "outliers": []},
    )
    storage = DataSetItem._meta.get_field("image").storage
    storage._setup()  # the storage behind Django's lazy default_storage
    with mock.patch.object(
        type(storage._wrapped), "url", autospec=True, side_effect=lambda self, name: f"/m/{name}"
    ) as url:
        html = get(clients, f"/admin/management/dataset/{dataset.pk}/health/").content.decode()
    assert "Suspected label errors (500)" in html and "Suspects 1–50 of 500" in html
    # An image and a thumbnail for each of the 50 suspects shown, not for the 450 others.
    images = {call.args[1] for call in url.call_args_list if call.args[1].startswith(f"datasets/{dataset.pk}/i")}
    assert len(images) == 50, sorted({call.args[1] for call in url.call_args_list})[:5]
    # The API answers every suspect with its URLs.
    api_report = get(clients, f"/api/dataset/{dataset.pk}/health/").json()["report"]
    assert len(api_report["label_issues"]) == 500 and all(issue["thumbnail"] for issue in api_report["label_issues"])


def test_the_health_page_shows_duplicate_groups_a_page_at_a_time(clients, db):
    from management.models import HealthCheck

    dataset = DataSet.objects.create(name="Fashion")
    add_images(dataset, 200)
    ids = list(dataset.items.order_by("id").values_list("pk", flat=True))
    groups = [{"items": [ids[2 * n], ids[2 * n + 1]], "exact": True, "labels": ["bag"]} for n in range(45)]
    HealthCheck.objects.create(
        dataset=dataset,
        status=HealthCheck.Status.SUCCEEDED,
        progress=1,
        report={"images": 200, "method": "test", "label_issues": [], "duplicates": groups, "outliers": []},
    )
    url = f"/admin/management/dataset/{dataset.pk}/health/"
    html = get(clients, url).content.decode()
    assert "Duplicates (45)" in html and html.count("kerasui-health-group") == 20
    assert f'alt="image {ids[39]}"' in html and f'alt="image {ids[40]}"' not in html
    assert "Groups 1–20 of 45" in html and '?duplicates_page=2#duplicates">next' in html
    last = get(clients, f"{url}?duplicates_page=3").content.decode()
    assert last.count("kerasui-health-group") == 5 and f'alt="image {ids[89]}"' in last
