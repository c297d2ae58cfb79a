"""Why did the model decide, in the admin: the Test page's heatmap, a misclassified image's heatmap on the
run page (made once, kept, served as private media), and the images behind each confusion-matrix cell."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image
from rest_framework.test import APIClient

from management.files import PRIVATE_HEADERS
from management.models import RunData, TrainingRun
from ml.evaluate import classification_report
from tests.e2e.test_csp import INLINE_HANDLER, INLINE_SCRIPT
from tests.images import colour_image
from tests.runs import store_results
from training.evaluations import evaluation_confusion_cell

LABELS = ["blue", "green", "red"]


def evaluated_run(dataset, *, answers: dict[int, tuple[str, float]], max_misclassified: int = 200) -> TrainingRun:
    """The dataset's current run, given a validation split of the items in `answers` and an evaluation in
    which the model answered each item's (label, confidence)."""
    run = dataset.current_run
    items = {item.pk: item for item in dataset.items.filter(pk__in=answers)}
    ids = sorted(answers)
    true = np.array([LABELS.index(items[item_id].label) for item_id in ids])
    probabilities = np.full((len(ids), len(LABELS)), 0.0)
    for row, item_id in enumerate(ids):
        label, confidence = answers[item_id]
        probabilities[row] = (1 - confidence) / (len(LABELS) - 1)
        probabilities[row, LABELS.index(label)] = confidence
    report = classification_report(
        true, probabilities, label_names=LABELS, item_ids=ids, max_misclassified=max_misclassified
    )
    train = list(dataset.items.exclude(pk__in=ids).values_list("pk", flat=True))
    store_results(run, splits={"train": train, "validation": ids, "test": []}, evaluation={"validation": report})
    return TrainingRun.objects.get(pk=run.pk)


@pytest.fixture
def mistakes(trained_dataset):
    """Nine validation images, three per label; two reds predicted blue, a green predicted red."""
    by_label = {label: list(trained_dataset.items.filter(label=label).order_by("pk")[:3]) for label in LABELS}
    answers = {item.pk: (item.label, 0.9) for items in by_label.values() for item in items}
    answers[by_label["red"][0].pk] = ("blue", 0.8)
    answers[by_label["red"][1].pk] = ("blue", 0.6)
    answers[by_label["green"][2].pk] = ("red", 0.7)
    return evaluated_run(trained_dataset, answers=answers), by_label


def client_with(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password="a-long-pass-phrase-9", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_test_page_shows_the_heatmap_over_the_image_when_asked(admin_client, trained_dataset):
    url = "/admin/management/dataset/test/"
    assert 'name="explain"' in admin_client.get(url).content.decode()
    image = SimpleUploadedFile("r.png", colour_image("red", seed=3, size=24))
    page = admin_client.post(url, {"dataset": trained_dataset.pk, "image": image, "explain": "on"}).content.decode()
    assert 'id="predicted-label">red<' in page
    assert 'class="kerasui-explanation"' in page and 'src="data:image/png;base64,' in page
    image = SimpleUploadedFile("r.png", colour_image("red", seed=3, size=24))
    plain = admin_client.post(url, {"dataset": trained_dataset.pk, "image": image}).content.decode()
    assert 'id="predicted-label">red<' in plain and 'class="kerasui-explanation"' not in plain


def test_a_misclassified_images_heatmap_is_a_png_made_once_and_kept(admin_client, mistakes, settings):
    run, by_label = mistakes
    item = by_label["red"][0]
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    url = f"/admin/management/trainingrun/{run.pk}/explain/{item.pk}.png"
    assert f'data-explain="{url}"' in page
    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    for header in ("X-Content-Type-Options", "Content-Security-Policy"):
        assert response[header] == PRIVATE_HEADERS[header]
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    heatmap = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert heatmap.format == "PNG" and heatmap.size == (16, 16)
    kept = list((Path(settings.MEDIA_ROOT) / f"explanations/run_{run.pk}").iterdir())
    assert [path.name.split("-")[0] for path in kept] == [f"item_{item.pk}"]
    before = kept[0].stat().st_mtime_ns
    assert admin_client.get(url).status_code == 200
    assert kept[0].stat().st_mtime_ns == before  # served from the file, not drawn again


def test_a_heatmap_that_cannot_be_kept_is_a_507_not_a_crash(admin_client, mistakes, settings):
    run, by_label = mistakes
    blocker = Path(settings.MEDIA_ROOT) / f"explanations/run_{run.pk}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the run's folder should be")
    response = admin_client.get(f"/admin/management/trainingrun/{run.pk}/explain/{by_label['red'][0].pk}.png")
    assert response.status_code == 507 and b"cannot be kept" in response.content
    assert sorted(path.name for path in blocker.parent.iterdir()) == [f"run_{run.pk}"]


def test_a_heatmap_needs_the_permission_to_see_the_runs_images_and_an_image_of_the_run(mistakes):
    run, by_label = mistakes
    url = f"/admin/management/trainingrun/{run.pk}/explain/{by_label['red'][0].pk}.png"
    assert client_with("runs", "view_trainingrun").get(url).status_code == 403
    assert client_with("images", "view_datasetitem").get(url).status_code == 403
    viewer = client_with("both", "view_trainingrun", "view_datasetitem")
    assert viewer.get(url).status_code == 200
    newer = run.dataset.items.create(label="red", image=by_label["red"][0].image.name)  # added after the run
    for item_id in (newer.pk, 424242):
        assert viewer.get(f"/admin/management/trainingrun/{run.pk}/explain/{item_id}.png").status_code == 404


def test_each_confusion_cell_links_to_exactly_its_images(admin_client, mistakes):
    run, by_label = mistakes
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    red, blue, green = LABELS.index("red"), LABELS.index("blue"), LABELS.index("green")
    cell = f"/admin/management/trainingrun/{run.pk}/confusion/validation/{red}/{blue}/"
    assert f'href="{cell}"' in page
    # A zero has nothing behind it: no link.
    assert f"/confusion/validation/{blue}/{green}/" not in page
    listed = admin_client.get(cell).content.decode()
    shown = {int(value) for value in re.findall(r'data-cell-item="(\d+)"', listed)}
    assert shown == {by_label["red"][0].pk, by_label["red"][1].pk}
    assert listed.index(f'data-cell-item="{by_label["red"][0].pk}"') < listed.index(
        f'data-cell-item="{by_label["red"][1].pk}"'
    )  # most confident first
    assert "(80% sure)" in listed and "(60% sure)" in listed
    for html in (page, listed):  # the scripts are files (the policy runs no inline script)
        assert not INLINE_SCRIPT.search(html) and not INLINE_HANDLER.search(html)
    diagonal = admin_client.get(f"/admin/management/trainingrun/{run.pk}/confusion/validation/{green}/{green}/")
    found = {int(value) for value in re.findall(r'data-cell-item="(\d+)"', diagonal.content.decode())}
    assert found == {item.pk for item in by_label["green"][:2]}


def test_a_cell_keeps_the_label_an_image_had_when_it_was_evaluated(mistakes):
    run, by_label = mistakes
    relabelled = by_label["red"][0]
    relabelled.label = "blue"  # "Label is blue" on the run page, after the evaluation
    relabelled.save()
    cell = evaluation_confusion_cell(run=run, split="validation", true_index=2, predicted_index=0)
    assert [image.item_id for image in cell.images] == [by_label["red"][0].pk, by_label["red"][1].pk]
    assert cell.count == 2


def test_when_only_the_most_confident_mistakes_were_kept_the_rest_are_read_with_their_labels_now(trained_dataset):
    by_label = {label: list(trained_dataset.items.filter(label=label).order_by("pk")[:2]) for label in LABELS}
    answers = {item.pk: (item.label, 0.9) for items in by_label.values() for item in items}
    answers[by_label["red"][0].pk] = ("blue", 0.8)
    answers[by_label["red"][1].pk] = ("blue", 0.6)
    run = evaluated_run(trained_dataset, answers=answers, max_misclassified=1)
    cell = evaluation_confusion_cell(run=run, split="validation", true_index=2, predicted_index=0)
    assert {image.item_id for image in cell.images} == {by_label["red"][0].pk, by_label["red"][1].pk}
    right = evaluation_confusion_cell(run=run, split="validation", true_index=0, predicted_index=0)
    assert {image.item_id for image in right.images} == {item.pk for item in by_label["blue"]}


def test_runs_without_stored_predictions_keep_plain_numbers(admin_client, mistakes):
    run, _ = mistakes
    report = dict(run.evaluation["validation"])
    del report["predictions_stored"]  # as the migration leaves a run evaluated before predictions were kept
    TrainingRun.objects.filter(pk=run.pk).update(evaluation={"validation": report})
    RunData.objects.filter(run=run).update(predictions={})
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    assert "/confusion/validation/" not in page
    answer = admin_client.get(f"/admin/management/trainingrun/{run.pk}/confusion/validation/2/0/")
    assert answer.status_code == 302
    assert admin_client.get(f"/admin/management/trainingrun/{run.pk}/confusion/nowhere/0/0/").status_code == 404


def test_the_api_lists_a_cells_images_and_serves_a_heatmap(mistakes, admin_user):
    run, by_label = mistakes
    api = APIClient()
    api.force_authenticate(admin_user)
    url = f"/api/trainingrun/{run.pk}/confusion/"
    answer = api.get(url, {"split": "validation", "true": "red", "predicted": "blue"})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["true"], body["predicted"], body["count"]) == ("red", "blue", 2)
    assert [image["item"] for image in body["images"]] == [item.pk for item in by_label["red"][:2]]
    assert body["images"][0]["confidence"] == 0.8 and body["images"][0]["image"].startswith("http")
    wrong = api.get(url, {"split": "validation", "true": "pink", "predicted": "blue"})
    assert wrong.status_code == 400 and "true" in wrong.json()
    heatmap = api.get(f"/api/trainingrun/{run.pk}/explain/{by_label['red'][0].pk}/")
    assert heatmap.status_code == 200 and heatmap["Content-Type"] == "image/png"
    assert api.get(f"/api/trainingrun/{run.pk}/explain/424242/").status_code == 404
