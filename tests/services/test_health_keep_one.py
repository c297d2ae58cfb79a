""" "Keep this one" of a group of copies: the others go, except an original a trained run used and the kept
copy was not in (that run would lose its image); the promotion reason survives manual promotions."""

import io

from django.core.files.base import ContentFile

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_import_zip, dataset_item_create
from health import services as health
from health.models import HealthDismissal
from tests.images import colour_zip
from tests.runs import finish_run, split_report
from training.versions import training_run_promote


def copy_of(item: DataSetItem) -> DataSetItem:
    with item.image.open("rb") as file:
        return dataset_item_create(dataset=item.dataset, label=item.label, file=ContentFile(file.read()))


def trained(dataset: DataSet):
    items = list(dataset.items.order_by("id"))
    labels = sorted({item.label for item in items})
    true = [labels.index(item.label) for item in items]
    ids = [item.pk for item in items]
    return finish_run(
        dataset, evaluation={"validation": split_report(ids, true, true, labels)}, splits={"validation": ids}
    )


def test_keeping_a_later_copy_keeps_the_original_a_trained_run_used(colour_dataset):
    original = colour_dataset.items.first()
    run = trained(colour_dataset)
    copy = copy_of(original)
    plan = health.health_keep_one_plan(dataset=colour_dataset, keep=copy.pk, item_ids=[original.pk, copy.pk])
    assert plan.delete == [] and plan.used == {original.pk: [run.pk]}
    assert health.health_keep_one(dataset=colour_dataset, keep=copy.pk, item_ids=[original.pk, copy.pk]) == 0
    assert DataSetItem.objects.filter(pk__in=[original.pk, copy.pk]).count() == 2
    assert set(HealthDismissal.objects.values_list("item", "kind")) == {
        (original.pk, "duplicate"),
        (copy.pk, "duplicate"),
    }


def test_copies_both_in_a_run_or_in_none_lose_all_but_the_kept_one(colour_dataset):
    first, second = colour_dataset.items.order_by("id")[:2]
    trained(colour_dataset)  # both were in it: keeping either leaves the run one copy
    assert health.health_keep_one(dataset=colour_dataset, keep=second.pk, item_ids=[first.pk, second.pk]) == 1
    assert not DataSetItem.objects.filter(pk=first.pk).exists()

    fresh = DataSet.objects.create(name="Fresh", image_size=16)
    dataset_import_zip(dataset=fresh, file=io.BytesIO(colour_zip(2)))
    original = fresh.items.first()
    copy = copy_of(original)
    assert health.health_keep_one(dataset=fresh, keep=copy.pk, item_ids=[original.pk, copy.pk]) == 1
    assert not DataSetItem.objects.filter(pk=original.pk).exists()


def test_promoting_by_hand_twice_keeps_the_reason_from_when_it_finished(colour_dataset):
    first = trained(colour_dataset)
    second = trained(colour_dataset)
    training_run_promote(run=first)
    training_run_promote(run=second)
    training_run_promote(run=first)
    first.refresh_from_db()
    assert (
        first.promotion["reason"] == "promoted by a person (when it finished: the dataset had no model yet: promoted)"
    )
