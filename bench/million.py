"""What a million images costs the database: the figures behind the README's "At a million images".

    .venv/bin/python -m bench.million [--images 1000000]

On a fresh SQLite data folder (migrated), rows only (no files): one dataset of `--images` items in 10
labels, counted as the dataset service counts them. Times, each the best of three:
  - counting the images per label by reading the items (what the pages did before issue 24) against
    reading the counts kept as data;
  - the last page of the image list by OFFSET against the same page by key (`id > last id seen`);
  - a paginator's COUNT(*) of one dataset's images;
and the size of a run's `splits` JSON and of an evaluation's per-image predictions at that size.
Prints a table and writes bench/results/million.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from bench.common import write_results

LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
PAGE = 60


def best_of(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ["KERASUI_DATA_DIR"] = tempfile.mkdtemp(prefix="kerasui-million-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    import django

    django.setup()
    from collections import Counter

    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count

    from datasets.models import DataSet, DataSetItem, LabelCount
    from datasets.services import dataset_label_counts, label_counts_recount

    call_command("migrate", verbosity=0)
    dataset = DataSet.objects.create(name="A million")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        rows = (
            (dataset.pk, LABELS[n % len(LABELS)], f"datasets/{dataset.pk}/{n:016x}.png", "", "2026-12-06 00:00:00")
            for n in range(args.images)
        )
        cursor.executemany(
            "INSERT INTO management_datasetitem (dataset_id, label, image, original_name, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    insert_seconds = time.perf_counter() - started
    label_counts_recount(dataset=dataset)
    database_bytes = Path(connection.settings_dict["NAME"]).stat().st_size

    items = DataSetItem.objects.filter(dataset=dataset)
    last_id = items.order_by("-id").values_list("id", flat=True)[PAGE]
    figures = {
        "images": args.images,
        "insert_seconds": round(insert_seconds, 1),
        "database_mb": round(database_bytes / 2**20),
        "count_per_label_by_reading_items_s": best_of(
            lambda: list(items.order_by().values("label").annotate(count=Count("id")))
        ),
        "count_per_label_kept_as_data_s": best_of(
            lambda: dataset_label_counts(dataset=DataSet.objects.get(pk=dataset.pk))
        ),
        "count_all_items_s": best_of(lambda: items.count()),
        "last_page_by_offset_s": best_of(lambda: list(items.order_by("id")[args.images - PAGE : args.images])),
        "last_page_by_key_s": best_of(lambda: list(items.filter(id__gt=last_id).order_by("id")[:PAGE])),
        "distinct_labels_by_reading_items_s": best_of(
            lambda: list(items.order_by("label").values_list("label", flat=True).distinct())
        ),
        "label_rows": LabelCount.objects.filter(dataset=dataset).count(),
    }
    ids = list(range(1, args.images + 1))
    random.Random(1).shuffle(ids)
    held_out = ids[: args.images // 5]
    splits = {"train": ids[len(held_out) :], "validation": held_out}
    figures["splits_json_mb"] = round(len(json.dumps(splits)) / 2**20, 1)
    predictions = [[item, item % 10, 0.9731] for item in held_out]
    figures["predictions_json_mb"] = round(len(json.dumps(predictions)) / 2**20, 1)
    assert sum(Counter(dataset_label_counts(dataset=dataset)).values()) == args.images

    width = max(map(len, figures))
    for name, value in figures.items():
        shown = f"{value * 1000:.1f} ms" if name.endswith("_s") else value
        print(f"{name:<{width}}  {shown}")
    write_results("million", figures)


if __name__ == "__main__":
    main()
