"""Dataset → Health in the admin: the page, starting a check, and the one-click actions behind their permissions."""

from django.contrib.auth.models import Permission, User
from django.test import Client

from datasets.models import DataSetItem
from health.models import HealthCheck, HealthDismissal


def done_check(dataset) -> HealthCheck:
    """A check as the job leaves it: a suspect, a duplicate pair and an outlier among the dataset's images."""
    first, second, third, fourth = DataSetItem.objects.filter(dataset=dataset).order_by("id")[:4]
    issue = {"item": first.pk, "given": first.label, "suggested": "red", "confidence": 0.93, "quality": 0.02}
    return HealthCheck.objects.create(
        dataset=dataset,
        status="succeeded",
        progress=1.0,
        report={
            "images": 30,
            "labels": ["blue", "green", "red"],
            "method": "EfficientNet-Lite0 features at 96 px, softmax head per fold",
            "folds": 5,
            "label_issues": [issue],
            "duplicates": [{"items": [second.pk, third.pk], "exact": False, "labels": [second.label]}],
            "leaks": {"run": None, "groups": []},
            "outliers": [{"item": fourth.pk, "label": fourth.label, "score": 7.5}],
            "balance": {"counts": {"blue": 10}, "smallest": [], "imbalance_ratio": 1.0, "notes": ["add <b>more</b>"]},
            "unreadable": [],
            "seconds": {"total": 1.5},
        },
    )


def test_the_dataset_page_links_to_health_and_a_check_starts_from_it(admin_client, colour_dataset):
    page = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/change/").content.decode()
    assert f"/admin/management/dataset/{colour_dataset.pk}/health/" in page
    health_page = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/health/").content.decode()
    assert "has not been checked yet" in health_page and "management/health.js" in health_page

    response = admin_client.post(f"/admin/management/dataset/{colour_dataset.pk}/health/check/")

    assert response.status_code == 302
    check = HealthCheck.objects.get(dataset=colour_dataset)
    assert check.status == "queued"
    health_page = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/health/").content.decode()
    assert f'data-url="/api/healthcheck/{check.pk}/"' in health_page and 'data-active="1"' in health_page
    assert admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/health/check/").status_code == 405


def test_the_page_lists_findings_with_thumbnails_and_escapes_what_it_shows(admin_client, colour_dataset):
    check = done_check(colour_dataset)
    page = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/health/").content.decode()
    suspect = check.report["label_issues"][0]["item"]
    item = DataSetItem.objects.get(pk=suspect)
    # Thumbnails, never originals (a 16 px image is its own thumbnail: then they are one URL).
    assert item.thumbnail_url in page
    assert item.thumbnail_url == item.image.url or f'src="{item.image.url}"' not in page
    assert "Relabel to 'red'" in page and "Keep this one" in page and "Keep them all" in page
    assert "add &lt;b&gt;more&lt;/b&gt;" in page
    assert "<script>" not in page.split("<body")[1]


def test_relabel_keep_delete_and_keep_one_change_the_dataset(admin_client, colour_dataset):
    check = done_check(colour_dataset)
    base = f"/admin/management/dataset/{colour_dataset.pk}/health"
    suspect = check.report["label_issues"][0]["item"]
    second, third = check.report["duplicates"][0]["items"]
    outlier = check.report["outliers"][0]["item"]

    admin_client.post(f"{base}/relabel/", {"item": suspect, "label": "red"})
    admin_client.post(f"{base}/keep/", {"item": [outlier], "kind": "outlier"})
    admin_client.post(f"{base}/keep_one/", {"keep": second, "item": [second, third]})

    assert DataSetItem.objects.get(pk=suspect).label == "red"
    assert HealthDismissal.objects.filter(item_id=outlier, kind="outlier").exists()
    assert DataSetItem.objects.filter(pk=second).exists() and not DataSetItem.objects.filter(pk=third).exists()
    page = admin_client.get(f"{base}/").content.decode()
    assert "Suspected label errors (0)" in page and "Outliers (0)" in page and "Duplicates (0)" in page

    response = admin_client.post(f"{base}/delete/", {"item": [outlier]}, follow=True)
    assert not DataSetItem.objects.filter(pk=outlier).exists()
    assert "Deleted 1 image." in response.content.decode()


def test_an_action_on_a_foreign_or_missing_item_is_a_message_not_an_error(admin_client, colour_dataset):
    response = admin_client.post(
        f"/admin/management/dataset/{colour_dataset.pk}/health/relabel/", {"item": "x", "label": "red"}, follow=True
    )
    assert response.status_code == 200 and "Items must be a list of item ids" in response.content.decode()
    response = admin_client.post(
        f"/admin/management/dataset/{colour_dataset.pk}/health/delete/", {"item": str(10**30)}, follow=True
    )
    assert response.status_code == 200 and "Every item must be an image of this dataset" in response.content.decode()


def test_deleting_needs_the_delete_permission(colour_dataset):
    user = User.objects.create_user("editor", password="a-long-pass-phrase-9", is_staff=True)
    codenames = ["view_dataset", "view_datasetitem", "change_datasetitem"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    check = done_check(colour_dataset)
    item = check.report["outliers"][0]["item"]
    page = client.get(f"/admin/management/dataset/{colour_dataset.pk}/health/").content.decode()
    assert "Keep this one" not in page and ">Delete<" not in page and "Relabel to" in page

    assert (
        client.post(f"/admin/management/dataset/{colour_dataset.pk}/health/delete/", {"item": [item]}).status_code
        == 403
    )
    assert DataSetItem.objects.filter(pk=item).exists()
