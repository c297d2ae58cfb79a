"""Deleting a dataset of 60,000 images (issue 24): the request's queries and seconds, then the job's.

    .venv/bin/python -m bench.scale_rows [--images 60000]      # prints the data folder
    .venv/bin/python -m bench.deletion DATA_DIR [--no-files]

Unless --no-files, first writes a small file for each image row of the data folder's dataset and one for
its thumbnail, as an import leaves them (120,000 files for 60,000 images). Then sends
`DELETE /api/dataset/ID/` through Django's test client as a superuser, counting its queries and timing it,
checks the dataset is gone from the list at once, and runs the deletion job in this process as
`manage.py job deletion ID` would, counting its queries and timing it, each batch of images (one
transaction each) too. Prints a table and writes bench/results/deletion.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def write_files(dataset) -> int:
    """One small file per image and per thumbnail, under the media folder."""
    from django.core.files.storage import default_storage

    from datasets.models import thumbnail_name

    written = 0
    for name in dataset.items.values_list("image", flat=True).iterator(chunk_size=5000):
        for stored in (name, thumbnail_name(name)):
            path = Path(default_storage.path(stored))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 300)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--no-files", action="store_true", help="rows only: no image or thumbnail files")
    args = parser.parse_args()
    os.environ["KERASUI_DATA_DIR"] = str(args.data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    os.environ["KERASUI_TRAINING_BACKEND"] = "none"  # the job runs below, in this process
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench.common import write_results
    from datasets import services
    from jobs.process import job_execute
    from management.models import DataSet, DataSetDeletion

    call_command("migrate", verbosity=0)
    settings.ALLOWED_HOSTS = ["*"]
    dataset = DataSet.objects.order_by("-id").first()
    images = dataset.items.count()
    files = 0 if args.no_files else write_files(dataset)
    folder = Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk)

    client = Client()
    client.force_login(User.objects.filter(is_superuser=True).first())
    client.get("/api/dataset/")  # this process's first request loads what every request needs
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        answer = client.delete(f"/api/dataset/{dataset.pk}/")
        request_seconds = time.perf_counter() - started
    assert answer.status_code == 204, answer.content
    request_sql = [query["sql"][:100] for query in queries.captured_queries]
    listed = client.get("/api/dataset/").json()
    assert all(row["id"] != dataset.pk for row in listed["results"]), "the dataset is still listed"
    job = DataSetDeletion.objects.get(dataset_number=dataset.pk)

    # Each phase's time, from the job's progress writes (each batch of images ends with one), and the
    # slowest statement: what holds SQLite's write lock longest.
    marks: list[tuple[str, float]] = []
    progress = services.lifecycle.job_progress
    slowest = [0.0, ""]

    def timed(**fields):
        marks.append((fields.get("phase", ""), time.perf_counter()))
        return progress(**fields)

    def statement(execute, sql, params, many, context):
        begun = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if time.perf_counter() - begun > slowest[0]:
                slowest[:] = [time.perf_counter() - begun, sql[:90]]

    services.lifecycle.job_progress = timed
    with CaptureQueriesContext(connection) as job_queries, connection.execute_wrapper(statement):
        started = time.perf_counter()
        ended = job_execute(kind="deletion", job_id=job.pk, worker="bench:0")
        job_seconds = time.perf_counter() - started
    marks.append(("end", time.perf_counter()))
    services.lifecycle.job_progress = progress
    assert ended.status == "succeeded", ended.error
    assert not DataSet.all_objects.filter(pk=dataset.pk).exists() and not folder.exists()
    # A batch: from one progress write to the next while images are deleted.
    batches = [
        later - earlier for (_a, earlier), (phase, later) in zip(marks, marks[1:], strict=False) if phase == "images"
    ]
    phases: dict[str, float] = {}
    for (phase, earlier), (_next, later) in zip(marks, marks[1:], strict=False):
        phases[phase] = phases.get(phase, 0.0) + later - earlier

    results = {
        "images": images,
        "files": files,
        "request": {"seconds": round(request_seconds, 3), "queries": len(queries), "sql": request_sql},
        "job": {
            "seconds": round(job_seconds, 2),
            "queries": len(job_queries),
            "batches": len(batches),
            "batch_size": services.DELETION_BATCH,
            "slowest_batch_seconds": round(max(batches, default=0.0), 3),
            "phases_seconds": {phase: round(seconds, 2) for phase, seconds in phases.items()},
            "slowest_statement": {"seconds": round(slowest[0], 3), "sql": slowest[1]},
        },
        "load": round(os.getloadavg()[0], 1),
    }
    print(f"{'':28} {'seconds':>9} {'queries':>8}")
    print(f"{'DELETE /api/dataset/ID/':28} {request_seconds:9.3f} {len(queries):8d}")
    print(f"{'deletion job':28} {job_seconds:9.2f} {len(job_queries):8d}")
    print(
        f"{images} images, {files} files; {len(batches)} batches of {services.DELETION_BATCH}, the slowest "
        f"{results['job']['slowest_batch_seconds']} s; load {results['load']}"
    )
    print("phases (s):", results["job"]["phases_seconds"], "slowest statement:", results["job"]["slowest_statement"])
    print(write_results("deletion", results))


if __name__ == "__main__":
    main()
