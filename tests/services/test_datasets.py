import io
from pathlib import Path

import pytest

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_delete, dataset_import_zip, dataset_item_create
from jobs.process import job_execute
from management.errors import ServiceError
from tests.images import colour_zip, png, zip_of


@pytest.fixture
def dataset(db):
    return DataSet.objects.create(name="Pets")


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def test_zip_with_folders_labels_each_image_by_its_folder(dataset):
    data = zip_of({"cat/1.png": png(), "cat/sub/2.jpg": png(format="JPEG"), "dog/3.png": png()})
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(data))
    assert report.counts == {"cat": 2, "dog": 1}
    assert sorted(dataset.items.values_list("label", flat=True)) == ["cat", "cat", "dog"]


def test_zip_with_a_typed_label_labels_every_image_with_it(dataset):
    data = zip_of({"1.png": png(), "cat/2.png": png()})
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(data), label="  tabby  ")
    assert report.counts == {"tabby": 2}
    assert set(dataset.items.values_list("label", flat=True)) == {"tabby"}


def test_zip_skips_non_images_and_reports_why(dataset, settings):
    data = zip_of(
        {
            "cat/1.png": png(),
            "cat/notes.txt": b"hello",
            "cat/broken.png": png(size=(64, 64))[:70],
            "loose.png": png(),
            "__MACOSX/cat/._1.png": b"resource fork",
            "cat/.DS_Store": b"junk",
        }
    )
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(data))
    assert report.counts == {"cat": 1}
    skipped = {entry["name"]: entry["reason"] for entry in report.skipped}
    assert set(skipped) == {"cat/notes.txt", "cat/broken.png", "loose.png"}
    assert "not an image" in skipped["cat/notes.txt"]
    assert "truncated" in skipped["cat/broken.png"]
    assert "folder" in skipped["loose.png"]
    assert len(media_files(settings)) == 1  # the image, a 16 px PNG: its own thumbnail


def test_zip_entry_names_never_choose_where_files_go(dataset, settings):
    data = zip_of({"../../evil/1.png": png(), "/abs/2.png": png()})
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(data), label="x")
    assert report.added == 2
    root = Path(settings.MEDIA_ROOT).resolve()
    for path in media_files(settings):
        assert path.resolve().is_relative_to(root / "datasets" / str(dataset.pk))


def test_a_symbolic_link_in_a_zip_is_skipped_never_followed(dataset, settings):
    import stat
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("cat/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "../../../../etc/passwd")
        archive.writestr("cat/real.png", png())
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(buffer.getvalue()))
    assert report.added == 1
    assert [entry["name"] for entry in report.skipped] == ["cat/link.png"]
    assert "not an image" in report.skipped[0]["reason"]
    assert not any(path.is_symlink() for path in Path(settings.MEDIA_ROOT).rglob("*"))


def test_a_file_that_is_not_a_zip_is_refused_and_leaves_nothing(dataset, settings):
    with pytest.raises(ServiceError) as error:
        dataset_import_zip(dataset=dataset, file=io.BytesIO(b"PK not really"))
    assert error.value.field == "file"
    assert dataset.items.count() == 0
    assert media_files(settings) == []


def test_a_failed_import_removes_the_files_it_already_wrote(dataset, settings, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(DataSetItem.objects, "bulk_create", explode)
    with pytest.raises(RuntimeError):
        dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"a/1.png": png(), "b/2.png": png()})))
    assert media_files(settings) == []


def test_single_image_is_verified_before_it_is_saved(dataset, settings):
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()), name="cat.png")
    assert item.pk and Path(item.image.path).exists()
    with pytest.raises(ServiceError, match="not an image"):
        dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(b"nope"), name="x.png")
    assert dataset.items.count() == 1 and len(media_files(settings)) == 1  # the image, its own thumbnail


def test_deleting_a_dataset_deletes_its_files(dataset, settings, django_capture_on_commit_callbacks):
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"a/1.png": png(), "b/2.png": png()})))
    with django_capture_on_commit_callbacks(execute=True):
        job = dataset_delete(dataset=dataset)
    job_execute(kind="deletion", job_id=job.pk)
    assert media_files(settings) == []


def test_deleting_a_dataset_deletes_the_logs_of_its_import_and_health_jobs(
    dataset, settings, django_capture_on_commit_callbacks
):
    from jobs.lifecycle import job_log_path
    from management.models import HealthCheck, ImportJob

    for job in (ImportJob.objects.create(dataset=dataset), HealthCheck.objects.create(dataset=dataset)):
        job_log_path(job=job).write_text("its log\n")
    assert len(media_files(settings)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        job = dataset_delete(dataset=dataset)
    job_execute(kind="deletion", job_id=job.pk)
    assert media_files(settings) == []


def test_a_zip_bomb_is_refused_before_anything_is_extracted(dataset, settings, tmp_path):
    import zipfile

    bomb = tmp_path / "bomb.zip"
    chunk = bytes(16 * 1024 * 1024)
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("red/ok.png", png())
        with archive.open("red/zeros.png", "w", force_zip64=True) as entry:
            for _ in range(64):  # 1 GiB of zeros
                entry.write(chunk)
    assert bomb.stat().st_size < 5 * 1024 * 1024
    with bomb.open("rb") as file, pytest.raises(ServiceError, match="inflates .* times"):
        dataset_import_zip(dataset=dataset, file=file)
    assert dataset.items.count() == 0
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(path.is_file() for path in media.rglob("*"))


def test_ordinary_image_zips_are_far_below_the_ratio_limit(dataset):
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(40)))
    assert report.added == 120
