"""The admin's Compare page: runs of a dataset side by side, for staff who may view runs."""

import io

import pytest
from django.contrib.auth.models import Permission, User

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from tests.images import colour_zip
from tests.runs import finish_run, split_report

HOSTILE = '<script>alert("code")</script>'


@pytest.fixture
def two_runs(db):
    """Two runs of a dataset with real images: the second gets one held-out image wrong that the first got right."""
    dataset = DataSet.objects.create(name="Compare <b>me</b>")
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(2)))
    items = list(dataset.items.order_by("id"))
    labels = sorted({item.label for item in items})
    ids = [item.pk for item in items]
    true = [labels.index(item.label) for item in items]
    wrong = list(true)
    wrong[0] = (true[0] + 1) % len(labels)
    runs = [
        finish_run(
            dataset,
            evaluation={"validation": split_report(ids, true, predicted, labels)},
            splits={"validation": ids},
            labels=labels,
            process=process,
        )
        for predicted, process in ((true, "model.add(layers.Flatten())\n"), (wrong, f"# {HOSTILE}\n"))
    ]
    return dataset, runs, items[0]


def test_the_compare_page_shows_curves_diffs_evaluation_and_flipped_images_escaped(admin_client, two_runs):
    dataset, (first, second), flipped = two_runs
    response = admin_client.get(f"/admin/management/trainingrun/compare/?ids={first.pk},{second.pk}")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="kerasui-compare-data"' in page and "management/compare.js" in page
    assert 'data-compare-chart="loss"' in page and 'data-compare-chart="accuracy"' in page
    assert HOSTILE not in page and "+# &lt;script&gt;alert(&quot;code&quot;)&lt;/script&gt;" in page
    assert "Compare <b>me</b>" not in page
    assert "kerasui-flip-broken" in page and flipped.thumbnail_url in page
    assert flipped.thumbnail_url == flipped.image.url or flipped.image.url not in page  # a 16 px image is its own
    assert "Confusion matrix difference" in page and "kerasui-difference" in page
    # Reached from the run page, and from the dataset page's run table.
    assert DataSet.objects.get(pk=dataset.pk).current_run_id == first.pk  # the second is worse: kept as a version
    run_page = admin_client.get(f"/admin/management/trainingrun/{second.pk}/change/").content.decode()
    assert f"/admin/management/trainingrun/compare/?ids={first.pk},{second.pk}" in run_page
    dataset_page = admin_client.get(f"/admin/management/dataset/{dataset.pk}/change/").content.decode()
    assert 'form="kerasui-compare-form"' in dataset_page and 'id="kerasui-compare-form"' in dataset_page
    # Ticked in the table (newest first), the oldest is the baseline.
    ticked = admin_client.get(f"/admin/management/trainingrun/compare/?ids={second.pk}&ids={first.pk}")
    assert ticked.context["comparison"]["baseline"] == first.pk


def test_the_run_list_compares_the_selected_runs(admin_client, two_runs):
    _, runs, _ = two_runs
    response = admin_client.post(
        "/admin/management/trainingrun/",
        {"action": "compare_selected", "_selected_action": [run.pk for run in runs]},
    )
    assert response.status_code == 302
    assert response.url == f"/admin/management/trainingrun/compare/?ids={runs[0].pk},{runs[1].pk}"


def test_bad_ids_on_the_compare_page_are_a_message_not_an_error(admin_client, two_runs):
    response = admin_client.get("/admin/management/trainingrun/compare/?ids=1,x", follow=True)
    assert response.status_code == 200 and "Compare: &#x27;x&#x27; is not a run id" in response.content.decode()


def test_the_compare_page_needs_staff_and_the_permission_to_view_runs(client, two_runs):
    _, runs, _ = two_runs
    url = f"/admin/management/trainingrun/compare/?ids={runs[0].pk},{runs[1].pk}"
    assert client.get(url).status_code == 302  # to the login page
    user = User.objects.create_user("viewer", password="a-long-pass-phrase-9", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_dataset"))
    client.force_login(user)
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_trainingrun"))
    client.force_login(User.objects.get(pk=user.pk))
    assert client.get(url).status_code == 200
