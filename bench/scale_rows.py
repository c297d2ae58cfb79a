"""A data folder for `bench.scale --pages-again` in a minute instead of half an hour (issue 24).

    .venv/bin/python -m bench.scale_rows [--images 60000]      # prints the data folder
    .venv/bin/python -m bench.scale --pages-again DATA_DIR

Rows only (no image file: the pages link thumbnails, they never decode them): `--images` image rows of
ten labels, counted as the datasets service counts them; a succeeded current run whose splits hold every
image (80 % train, 20 % validation) and whose evaluation predicts the validation images, 1 in 7 wrong;
and a succeeded health check with a report of the size the real check gave at 60,000 Fashion-MNIST
images (2,763 suspects, 81 duplicate groups and as many leaks, 50 outliers, a score per image). The
pages then read what they read after a real run and check, without the import, training and check.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import database_with_token
from bench.scale import NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-scale-rows-"))
    database_with_token(data_dir, "scale")
    from datasets.services import label_counts_add
    from management.models import DataSet, DataSetItem, HealthCheck, TrainingRun
    from tests.runs import split_report, store_results
    from training.services import training_run_create

    random = np.random.default_rng(1)
    dataset = DataSet.objects.create(name="Fashion-MNIST", image_size=28, color_mode="grayscale", epochs=3, seed=1)
    labels = random.integers(0, len(NAMES), args.images)
    items = [
        DataSetItem(dataset=dataset, label=NAMES[label], image=f"datasets/{dataset.pk}/{number:07d}.png")
        for number, label in enumerate(labels)
    ]
    DataSetItem.objects.bulk_create(items, batch_size=2000)
    label_counts_add(changes=Counter((dataset.pk, item.label) for item in items))

    ids = list(dataset.items.order_by("id").values_list("pk", flat=True))
    names = sorted(NAMES)
    true = [names.index(NAMES[label]) for label in labels]
    validation = list(range(0, len(ids), 5))
    predicted = [(true[row] + (n % 7 == 0)) % len(names) for n, row in enumerate(validation)]
    held_out = set(validation)
    run = training_run_create(dataset=dataset, enqueue=False)
    store_results(
        run,
        splits={
            "train": [ids[row] for row in range(len(ids)) if row not in held_out],
            "validation": [ids[row] for row in validation],
            "test": [],
        },
        evaluation={
            "validation": split_report(
                [ids[row] for row in validation], [true[row] for row in validation], predicted, names
            )
        },
        status=TrainingRun.Status.SUCCEEDED,
        progress=1.0,
        labels=names,
        metrics={"val_accuracy": 0.857},
        history=[{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.857}],
    )
    dataset.current_run_id = run.pk
    dataset.save(update_fields=["current_run"])

    def pick(count: int) -> list[int]:
        return [int(item) for item in random.choice(ids, count, replace=False)]

    label_of = dict(zip(ids, (NAMES[label] for label in labels), strict=True))
    issues = [
        {"item": item, "given": label_of[item], "suggested": names[0], "confidence": 0.9, "quality": 0.01}
        for item in pick(2763)
    ]
    groups = [{"items": pick(2 + n % 3), "exact": False, "labels": [names[n % 10]]} for n in range(81)]
    HealthCheck.objects.create(
        dataset=dataset,
        status=HealthCheck.Status.SUCCEEDED,
        progress=1.0,
        label_quality={
            str(item): round(float(score), 4) for item, score in zip(ids, random.random(len(ids)), strict=True)
        },
        report={
            "images": len(ids),
            "labels": names,
            "method": "rows made by bench.scale_rows",
            "folds": 5,
            "label_issues": issues,
            "duplicates": groups,
            "leaks": {"run": run.pk, "groups": [{**group, "splits": ["train", "validation"]} for group in groups]},
            "outliers": [{"item": item, "label": label_of[item], "score": 10.0} for item in pick(50)],
            "balance": {"counts": dict(Counter(label_of.values())), "smallest": [], "notes": []},
            "unreadable": [],
            "seconds": {"total": 0},
        },
    )
    print(data_dir)


if __name__ == "__main__":
    main()
