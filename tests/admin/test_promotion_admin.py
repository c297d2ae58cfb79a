"""The promotion policy in the admin: the run page and the dataset page say why a version is not current,
and offer Promote."""

from django.utils.html import escape

from datasets.models import DataSet
from tests.runs import finish_run, split_report

IDS = [21, 22, 23, 24]


def test_the_run_and_dataset_pages_show_why_a_worse_run_was_kept_and_promote_it(admin_client, db):
    dataset = DataSet.objects.create(name="Kept <b>versions</b>")
    evaluations = [
        {"validation": split_report(IDS, [0, 0, 1, 1], predicted, ["a", "b"])}
        for predicted in ([0, 0, 1, 1], [0, 0, 0, 0])
    ]
    good, worse = [finish_run(dataset, evaluation=evaluation, splits={"validation": IDS}) for evaluation in evaluations]
    reason = escape(worse.promotion["reason"])
    assert "kept as a version, not promoted" in reason

    run_page = admin_client.get(f"/admin/management/trainingrun/{worse.pk}/change/").content.decode()
    assert reason in run_page
    assert f"/admin/management/trainingrun/{worse.pk}/promote/" in run_page
    dataset_page = admin_client.get(f"/admin/management/dataset/{dataset.pk}/change/").content.decode()
    assert reason in dataset_page and f"/admin/management/trainingrun/{worse.pk}/promote/" in dataset_page
    assert "Kept <b>versions</b>" not in dataset_page  # escaped everywhere

    current_page = admin_client.get(f"/admin/management/trainingrun/{good.pk}/change/").content.decode()
    assert f"/admin/management/trainingrun/{good.pk}/promote/" not in current_page

    admin_client.post(f"/admin/management/trainingrun/{worse.pk}/promote/")
    assert DataSet.objects.get(pk=dataset.pk).current_run_id == worse.pk
