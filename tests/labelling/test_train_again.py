"""The dataset page offers to train again once enough images were labelled since the current model (issue 27,
item 5)."""

import io

from datasets.services import dataset_item_create
from labelling.services import RETRAIN_AFTER, dataset_labelled_since_current
from tests.images import colour_image
from training.models import TrainingRun


def test_the_offer_appears_once_enough_images_were_labelled_since_the_current_run(admin_client, trained_dataset):
    run = trained_dataset.current_run
    TrainingRun.objects.filter(pk=run.pk).update(split_counts={"train": 24, "validation": 6, "test": 0})
    trained_dataset.refresh_from_db()
    url = f"/admin/management/dataset/{trained_dataset.pk}/change/"
    assert dataset_labelled_since_current(dataset=trained_dataset) == 0
    assert 'id="kerasui-retrain"' not in admin_client.get(url).content.decode()

    for number in range(RETRAIN_AFTER - 1):
        dataset_item_create(
            dataset=trained_dataset, label="red", file=io.BytesIO(colour_image("red", seed=900 + number))
        )
    dataset_item_create(dataset=trained_dataset, label="", file=io.BytesIO(colour_image("red", seed=999)))
    assert 'id="kerasui-retrain"' not in admin_client.get(url).content.decode()  # unlabelled ones do not count

    dataset_item_create(dataset=trained_dataset, label="blue", file=io.BytesIO(colour_image("blue", seed=1000)))
    page = admin_client.get(url).content.decode()
    assert 'id="kerasui-retrain"' in page and f"{RETRAIN_AFTER} images were labelled since" in page
    assert "Train again" in page
