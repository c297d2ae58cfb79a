"""What the current model would have predicted for the labels that came in since (issue 27, item 5): its
stored suggestions against the labels people gave, counted without inference, on the dataset page beside the
offer to train again, with a link to the images it got wrong."""

import io

from datasets.services import dataset_item_create, dataset_item_update
from labelling import services as suggestions
from labelling.services import dataset_items_label, dataset_suggestions_score, suggestions_accept
from management.models import DataSetItem, Suggestion, TrainingRun
from tests.images import png


def suggested(dataset, label: str, *, run=None, seed: int) -> DataSetItem:
    """An unlabelled image with the model's suggestion, as the suggestions job writes it."""
    item = dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png(color=(seed, 0, 0))))
    Suggestion.objects.create(
        item=item, dataset=dataset, run=run or dataset.current_run, label=label, confidence=0.9, margin=0.8, top=[]
    )
    return item


def test_the_score_counts_the_suggestions_people_confirmed_or_corrected_since(trained_dataset):
    dataset = trained_dataset
    accepted = suggested(dataset, "red", seed=1)
    corrected = suggested(dataset, "red", seed=2)
    relabelled = suggested(dataset, "green", seed=3)
    undone = suggested(dataset, "blue", seed=4)
    waiting = suggested(dataset, "blue", seed=5)
    assert dataset_suggestions_score(dataset=dataset) is None  # nothing labelled yet

    assert suggestions_accept(dataset=dataset, ids=[accepted.pk]) == 1  # right
    dataset_items_label(dataset=dataset, ids=[corrected.pk], label="blue")  # wrong
    dataset_item_update(item=relabelled, label="green")  # right, through the gallery's path
    dataset_items_label(dataset=dataset, ids=[undone.pk], label="blue")
    dataset_items_label(dataset=dataset, ids=[undone.pk], label="", allow_empty=True)  # the page's undo
    dataset_item_create(dataset=dataset, label="red", file=io.BytesIO(png(color=(9, 9, 9))))  # never suggested

    score = dataset_suggestions_score(dataset=dataset)
    assert (score.right, score.total, score.wrong, score.percent, score.capped) == (2, 3, 1, 67, False)
    assert Suggestion.objects.get(item=undone).labelled_at is None  # back in the queue, suggestion and all
    assert Suggestion.objects.get(item=waiting).labelled_at is None

    # A person fixing a label they gave: the score follows the label the image has now.
    dataset_items_label(dataset=dataset, ids=[corrected.pk], label="red")
    assert dataset_suggestions_score(dataset=dataset).right == 3


def test_only_the_current_models_suggestions_count_and_the_query_is_bounded(trained_dataset, monkeypatch):
    dataset = trained_dataset
    older = TrainingRun.objects.get(pk=dataset.current_run_id)
    older.pk = None
    older.save()  # a copy: another version, not the current one
    stale = suggested(dataset, "red", run=older, seed=1)
    items = [suggested(dataset, "green", seed=2 + n) for n in range(3)]
    dataset_items_label(dataset=dataset, ids=[stale.pk, *(item.pk for item in items)], label="green")
    score = dataset_suggestions_score(dataset=dataset)
    assert (score.right, score.total, score.run_id) == (3, 3, dataset.current_run_id)

    monkeypatch.setattr(suggestions, "SCORE_LIMIT", 2)
    score = dataset_suggestions_score(dataset=dataset)
    assert (score.right, score.total, score.capped) == (2, 2, True)


def test_the_dataset_page_shows_the_score_where_it_offers_to_train_again_and_links_the_wrong_ones(
    admin_client, trained_dataset, django_assert_max_num_queries
):
    dataset = trained_dataset
    right = [suggested(dataset, "red", seed=n) for n in range(4)]
    wrong = suggested(dataset, "red", seed=10)
    suggestions_accept(dataset=dataset, ids=[item.pk for item in right])
    dataset_items_label(dataset=dataset, ids=[wrong.pk], label="blue")
    url = f"/admin/management/dataset/{dataset.pk}/change/"
    assert 'id="kerasui-retrain-score"' not in admin_client.get(url).content.decode()  # no offer, no score

    labelled = DataSetItem.objects.filter(dataset=dataset).exclude(label="").count()
    TrainingRun.objects.filter(pk=dataset.current_run_id).update(split_counts={"train": labelled - 20})
    page = admin_client.get(url).content.decode()
    assert 'id="kerasui-retrain"' in page and 'id="kerasui-retrain-score"' in page
    assert "<strong>4 of 5</strong> right (80 %)" in page
    link = f"/admin/management/datasetitem/?dataset__id__exact={dataset.pk}&amp;suggestion=wrong"
    assert f'<a href="{link}">the 1 it got wrong</a>' in page

    with django_assert_max_num_queries(20):
        listing = admin_client.get(link.replace("&amp;", "&"))
    assert listing.status_code == 200
    shown = listing.context["cl"].result_list
    assert [item.pk for item in shown] == [wrong.pk]
    assert "red (90%)" in listing.content.decode()  # what the model suggested, beside the label given
    right_ones = admin_client.get(link.replace("&amp;", "&").replace("wrong", "right")).context["cl"].result_list
    assert {item.pk for item in right_ones} == {item.pk for item in right}
