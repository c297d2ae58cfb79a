"""Labelling benchmark: how often the model's suggestions are right on a real dataset, least sure first.

    .venv/bin/python -m bench.labelling [--per-label 30] [--epochs 15]

scikit-learn's handwritten digits (1,797 real 8×8 scans from UCI, no download), scaled to 16 px: `--per-label`
images of each digit uploaded labelled, the rest uploaded as one unlabelled zip (their true labels kept
by the bench only). `manage.py train` trains the default model code in a subprocess; the suggestions job
then predicts every unlabelled image (`manage.py job suggestions ID`, its own process, ONNX Runtime
where the export is proven). Reported: the share of suggestions that are right, overall, above
confidence thresholds (what "accept all above" would label, and how many of those are wrong), and among
the least sure tenth (what the labelling page shows first). Writes bench/results/labelling.json.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import write_results
from bench.transfer import digits, manage, setup

SEED = 1


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((16, 16), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-label", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    options = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-labelling-"))
    environment = setup(data_dir)

    from datasets.models import DataSet
    from datasets.services import dataset_import_zip, dataset_item_create
    from labelling.models import Suggestion, SuggestionJob

    (images, targets), _, names = digits()
    generator = np.random.default_rng(SEED)
    order = generator.permutation(len(images))
    labelled_rows = [row for label in range(10) for row in order[targets[order] == label][: options.per_label]]
    unlabelled_rows = sorted(set(range(len(images))) - set(labelled_rows))
    dataset = DataSet.objects.create(name="Digits", image_size=16, color_mode="grayscale", epochs=options.epochs)
    for row in labelled_rows:
        dataset_item_create(dataset=dataset, label=names[targets[row]], file=io.BytesIO(png(images[row])))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for row in unlabelled_rows:
            archive.writestr(f"{row}.png", png(images[row]))
    buffer.seek(0)
    dataset_import_zip(dataset=dataset, file=buffer, unlabelled=True)
    truth = {
        item.original_name: names[targets[int(item.original_name.split(".")[0])]]
        for item in dataset.items.filter(label="")
    }

    train_seconds, _ = manage(environment, "train", str(dataset.pk))
    job = SuggestionJob.objects.filter(dataset=dataset, status="queued").first()
    if job is None:  # the run finished in another process: its commit queued nothing here
        from labelling.suggestion_jobs import suggestions_request

        job = suggestions_request(dataset_id=dataset.pk)
    suggest_seconds, _ = manage(environment, "job", "suggestions", str(job.pk))
    job.refresh_from_db()
    rows = list(Suggestion.objects.filter(dataset=dataset).order_by("margin").select_related("item"))
    right = np.array([truth[row.item.original_name] == row.label for row in rows])
    confidence = np.array([row.confidence for row in rows])
    tenth = max(1, len(rows) // 10)
    results = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'} (shared with other work)",
        "dataset": "scikit-learn digits (UCI), 16 px grayscale",
        "labelled": len(labelled_rows),
        "unlabelled": len(unlabelled_rows),
        "suggested": len(rows),
        "train_seconds": round(train_seconds, 1),
        "suggest_seconds": round(suggest_seconds, 1),
        "engine": job.run.serving_engine if job.run else "",
        "right": round(float(right.mean()), 4),
        "least_sure_tenth_right": round(float(right[:tenth].mean()), 4),
        "surest_tenth_right": round(float(right[-tenth:].mean()), 4),
        "thresholds": {
            str(threshold): {
                "share": round(float((confidence >= threshold).mean()), 4),
                "right": round(float(right[confidence >= threshold].mean()), 4)
                if (confidence >= threshold).any()
                else None,
            }
            for threshold in (0.5, 0.8, 0.9, 0.95, 0.99)
        },
    }
    least, surest = results["least_sure_tenth_right"], results["surest_tenth_right"]
    print(f"{len(rows)} suggestions, {results['right']:.1%} right; least sure tenth {least:.1%}, surest {surest:.1%}")
    print("confidence ≥  share  right")
    for threshold, row in results["thresholds"].items():
        shown = "—" if row["right"] is None else format(row["right"], ".1%")
        print(f"{threshold:>12}  {row['share']:5.1%}  {shown}")
    print(f"train {train_seconds:.1f} s, suggestions job {suggest_seconds:.1f} s (processes, shared machine)")
    print(write_results("labelling", results))


if __name__ == "__main__":
    main()
