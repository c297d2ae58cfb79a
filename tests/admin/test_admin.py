import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import DataSet, DataSetItem
from tests.images import colour_image, colour_zip, png, zip_of
from tests.runs import run_queued_imports
from training.models import TrainingRun
from training.services import training_run_create


def test_every_admin_page_renders(admin_client, trained_dataset):
    run = trained_dataset.current_run
    item = trained_dataset.items.first()
    pages = [
        "/admin/",
        "/admin/management/dataset/",
        f"/admin/management/dataset/{trained_dataset.pk}/change/",
        "/admin/management/dataset/add/",
        "/admin/management/datasetitem/",
        f"/admin/management/datasetitem/{item.pk}/change/",
        "/admin/management/trainingrun/",
        f"/admin/management/trainingrun/{run.pk}/change/",
        "/admin/management/dataset/upload/",
        "/admin/management/dataset/test/",
        "/",
    ]
    for page in pages:
        assert admin_client.get(page).status_code == 200, page


def test_dataset_page_shows_label_counts_thumbnails_and_runs(admin_client, trained_dataset):
    html = admin_client.get(f"/admin/management/dataset/{trained_dataset.pk}/change/").content.decode()
    for label in ("blue", "green", "red"):
        assert f">{label}</a></td><td>10</td>" in html
    assert html.count('class="kerasui-thumb"') == 24  # the gallery's first page, newest first
    newest = trained_dataset.items.latest("id")
    # Thumbnails, never originals (a 16 px image is its own thumbnail: then they are one URL).
    assert newest.thumbnail_url in html
    assert newest.thumbnail_url == newest.image.url or newest.image.url not in html
    assert f"run {trained_dataset.current_run_id}" in html
    listing = admin_client.get("/admin/management/dataset/").content.decode()
    assert "Succeeded" in listing and "100.0%" in listing


def test_upload_zip_page_labels_by_folder_or_by_the_typed_label(admin_client, db):
    dataset = DataSet.objects.create(name="Colours")
    response = admin_client.post(
        "/admin/management/dataset/upload/",
        {"dataset": dataset.pk, "label": "", "file": SimpleUploadedFile("c.zip", colour_zip(2))},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Importing c.zip into &#x27;Colours&#x27;" in page and "This page reloads itself" in page
    assert not dataset.items.exists()  # the request only kept the zip
    (job,) = run_queued_imports()
    page = admin_client.get(response.redirect_chain[-1][0]).content.decode()
    assert "Imported 6 images" in page and "blue: 2, green: 2, red: 2" in page and "reloads itself" not in page
    assert (
        f"/admin/management/dataset/import/{job.pk}/"
        in admin_client.get(f"/admin/management/dataset/{dataset.pk}/change/").content.decode()
    )
    admin_client.post(
        f"/admin/management/dataset/{dataset.pk}/upload/",
        {
            "dataset": dataset.pk,
            "label": "mixed",
            "file": SimpleUploadedFile("c.zip", zip_of({"a.png": png(), "x.txt": b"x"})),
        },
        follow=True,
    )
    (job,) = run_queued_imports()
    assert dataset.items.filter(label="mixed").count() == 1
    page = admin_client.get(f"/admin/management/dataset/import/{job.pk}/").content.decode()
    assert "Skipped 1 entry" in page and "x.txt" in page
    refused = admin_client.post(
        "/admin/management/dataset/upload/",
        {"dataset": dataset.pk, "file": SimpleUploadedFile("c.zip", b"not a zip")},
    )
    assert refused.status_code == 200 and "not a zip archive" in refused.content.decode()


def test_single_image_upload_refuses_non_images(admin_client, db):
    dataset = DataSet.objects.create(name="Colours")
    ok = admin_client.post(
        "/admin/management/datasetitem/add/",
        {"dataset": dataset.pk, "label": "red", "image": SimpleUploadedFile("r.png", png())},
    )
    assert ok.status_code == 302 and dataset.items.count() == 1
    bad = admin_client.post(
        "/admin/management/datasetitem/add/",
        {"dataset": dataset.pk, "label": "red", "image": SimpleUploadedFile("r.png", b"not an image")},
    )
    assert bad.status_code == 200 and dataset.items.count() == 1
    assert "errorlist" in bad.content.decode()


def test_train_action_and_button_queue_runs_and_refuse_a_second(admin_client, colour_dataset):
    response = admin_client.post(
        "/admin/management/dataset/",
        {"action": "train_selected", "_selected_action": [colour_dataset.pk]},
        follow=True,
    )
    assert "queued" in response.content.decode()
    assert TrainingRun.objects.filter(dataset=colour_dataset, status="queued").count() == 1
    again = admin_client.post(f"/admin/management/dataset/{colour_dataset.pk}/train/", follow=True)
    assert "already being trained" in again.content.decode()
    assert TrainingRun.objects.filter(dataset=colour_dataset).count() == 1


def test_cancel_button_cancels_a_queued_run(admin_client, colour_dataset):
    admin_client.post(f"/admin/management/dataset/{colour_dataset.pk}/train/")
    run = TrainingRun.objects.get(dataset=colour_dataset)
    admin_client.post(f"/admin/management/trainingrun/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_test_page_shows_the_predicted_label_and_probabilities(admin_client, trained_dataset):
    response = admin_client.post(
        "/admin/management/dataset/test/",
        {"dataset": trained_dataset.pk, "image": SimpleUploadedFile("b.png", colour_image("blue", seed=31337))},
    )
    html = response.content.decode()
    assert '<strong id="predicted-label">blue</strong>' in html
    assert html.count('class="kerasui-bar"') == 3


@pytest.mark.parametrize("data, message", [(b"garbage", "not an image"), (b"", "empty")])
def test_test_page_explains_a_bad_image(admin_client, trained_dataset, data, message):
    response = admin_client.post(
        "/admin/management/dataset/test/",
        {"dataset": trained_dataset.pk, "image": SimpleUploadedFile("b.png", data)},
    )
    assert response.status_code == 200 and message in response.content.decode()


def test_run_page_downloads_the_model_and_shows_the_log(admin_client, trained_dataset, settings):
    run = trained_dataset.current_run
    log = settings.MEDIA_ROOT / "logs" / f"run_{run.pk}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("Epoch 1/6\nsomething useful\n")
    TrainingRun.objects.filter(pk=run.pk).update(log_file=f"logs/run_{run.pk}.log")
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    assert "something useful" in page and "largest difference from Keras" in page
    download = admin_client.get(f"/admin/management/trainingrun/{run.pk}/model/")
    assert download.status_code == 200 and download["Content-Disposition"].startswith("attachment")


def test_the_log_of_a_starting_run_is_nothing_yet_until_its_file_exists(admin_client, colour_dataset, settings):
    """The run page polls the log from the moment the run is queued: before its process has written the
    file (or, with a bucket, sent its first copy) the answer is 204, never a 404 in the browser's console."""
    run = training_run_create(dataset=colour_dataset, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(log_file="logs/run_starting.log")
    assert admin_client.get(f"/admin/management/trainingrun/{run.pk}/log/").status_code == 204
    log = settings.MEDIA_ROOT / "logs" / "run_starting.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("Epoch 1/6\n")
    answer = admin_client.get(f"/admin/management/trainingrun/{run.pk}/log/")
    assert answer.status_code == 200 and b"".join(answer.streaming_content) == b"Epoch 1/6\n"
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED, log_file="logs/gone.log")
    assert admin_client.get(f"/admin/management/trainingrun/{run.pk}/log/").status_code == 404


def test_deleting_items_in_the_admin_deletes_their_files(
    admin_client, colour_dataset, django_capture_on_commit_callbacks
):
    item = DataSetItem.objects.filter(dataset=colour_dataset).first()
    path = item.image.path
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/management/datasetitem/{item.pk}/delete/", {"post": "yes"})
    assert not DataSetItem.objects.filter(pk=item.pk).exists()
    import os

    assert not os.path.exists(path)


def test_model_code_is_read_only_without_the_model_code_permission(client, colour_dataset):
    from django.contrib.auth.models import Permission, User

    editor = User.objects.create_user("editor", password="a-long-pass-phrase-9", is_staff=True)
    editor.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_dataset", "change_dataset", "add_dataset"])
    )
    client.force_login(editor)
    url = f"/admin/management/dataset/{colour_dataset.pk}/change/"
    page = client.get(url).content.decode()
    assert 'name="process"' not in page and "model.add(" in page
    form = {
        "name": "Renamed",
        "process": "import os\nos.system('true')\n",
        "epochs": 3,
        "batch_size": 8,
        "image_size": 16,
        "color_mode": "rgb",
        "validation_split": 0.2,
        "verbose": 2,
        "architecture": "code",
        "learning_rate": 0.001,
        "test_split": 0,
        "early_stopping_patience": 5,
        "augment_flip": "none",
        "augment_rotation": 0,
        "augment_zoom": 0,
        "augment_contrast": 0,
    }
    assert client.post(url, form).status_code == 302
    colour_dataset.refresh_from_db()
    assert colour_dataset.name == "Renamed" and "os.system" not in colour_dataset.process

    editor.user_permissions.add(Permission.objects.get(codename="change_model_code"))
    client.force_login(User.objects.get(pk=editor.pk))
    assert 'name="process"' in client.get(url).content.decode()


def test_run_page_shows_the_evaluation_with_its_misclassified_images_and_a_resume_button(admin_client, colour_dataset):
    from training import services as training

    run = training.training_run_create(dataset=colour_dataset, enqueue=False)
    red = colour_dataset.items.filter(label="red").first()
    evaluation = {
        "count": 2,
        "loss": 0.5,
        "accuracy": 0.5,
        "macro_f1": 0.33,
        "labels": ["blue", "green", "red"],
        "per_class": [
            {"label": name, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1}
            for name in ("blue", "green", "red")
        ],
        "confusion_matrix": [[1, 0, 0], [0, 0, 0], [0, 7, 0]],
        "misclassified_count": 1,
        "misclassified": [{"item": red.pk, "true": "red", "predicted": "green", "confidence": 0.9}],
    }
    TrainingRun.objects.filter(pk=run.pk).update(
        status="cancelled",
        evaluation={"test": evaluation},
        checkpoint=f"checkpoints/run_{run.pk}",
        history=[{"epoch": 1, "loss": 1.0}],
    )
    html = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    assert "Test images" in html and "true \\ predicted" in html and "<td>7</td>" in html
    assert "accuracy 50.0%, loss 0.500" in html  # in percent, as the run's headline and cards say it
    assert f"/admin/management/datasetitem/{red.pk}/change/" in html and red.thumbnail_url in html
    assert "Resume from epoch 1" in html
    response = admin_client.post(f"/admin/management/trainingrun/{run.pk}/resume/")
    assert response.status_code == 302
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"


def test_validate_page_shows_the_layers_or_marks_the_line_that_failed(admin_client, colour_dataset):
    html = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/validate/").content.decode()
    assert "The model builds" in html and "predictions" in html
    colour_dataset.process = "model.add(Flatten())\nmodel.add(Dense(units))"
    colour_dataset.save()
    html = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/validate/").content.decode()
    assert "does not build" in html and "NameError" in html and "<strong" in html


def test_the_dataset_form_refuses_holding_out_too_much(admin_client, colour_dataset):
    url = f"/admin/management/dataset/{colour_dataset.pk}/change/"
    form = {
        "name": "Colours",
        "process": colour_dataset.process,
        "epochs": 3,
        "batch_size": 8,
        "image_size": 16,
        "color_mode": "rgb",
        "validation_split": 0.5,
        "test_split": 0.45,
        "verbose": 2,
        "architecture": "code",
        "learning_rate": 0.001,
        "early_stopping_patience": 5,
        "augment_flip": "none",
        "augment_rotation": 0,
        "augment_zoom": 0,
        "augment_contrast": 0,
    }
    response = admin_client.post(url, form)
    assert response.status_code == 200
    assert "at most 0.9 of the images" in response.content.decode()


def test_the_upload_zip_page_needs_the_add_dataset_item_permission_as_the_api_does(client, db):
    from django.contrib.auth.models import Permission, User

    dataset = DataSet.objects.create(name="Colours")
    editor = User.objects.create_user("editor", password="a-long-pass-phrase-9", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_dataset", "change_dataset"]))
    client.force_login(editor)
    for url in ["/admin/management/dataset/upload/", f"/admin/management/dataset/{dataset.pk}/upload/"]:
        assert client.get(url).status_code == 403, url
    refused = client.post(
        "/admin/management/dataset/upload/",
        {"dataset": dataset.pk, "label": "red", "file": SimpleUploadedFile("c.zip", zip_of({"a.png": png()}))},
    )
    assert refused.status_code == 403 and dataset.items.count() == 0
    for page in ["/admin/", "/admin/management/dataset/", f"/admin/management/dataset/{dataset.pk}/change/"]:
        assert "/upload/" not in client.get(page).content.decode(), page

    uploader = User.objects.create_user("uploader", password="a-long-pass-phrase-9", is_staff=True)
    uploader.user_permissions.add(*Permission.objects.filter(codename__in=["view_dataset", "add_datasetitem"]))
    client.force_login(uploader)
    assert client.get("/admin/management/dataset/upload/").status_code == 200
    added = client.post(
        "/admin/management/dataset/upload/",
        {"dataset": dataset.pk, "label": "red", "file": SimpleUploadedFile("c.zip", zip_of({"a.png": png()}))},
    )
    assert added.status_code == 302 and client.get(added["Location"]).status_code == 200
    run_queued_imports()
    assert dataset.items.count() == 1
    assert "/upload/" in client.get(f"/admin/management/dataset/{dataset.pk}/change/").content.decode()
