"""Migration 0019 moves each run's per-image data (its splits' item ids, its evaluated images' predictions)
out of the run's row into RunData, and a health check's label quality scores out of its report; and back
when it is reversed."""

import pytest

MIGRATION = ("management", "0019_per_image_data")


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_splits_and_predictions_into_their_own_table_and_back():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    parents = executor.loader.graph.node_map[MIGRATION].parents
    before = [parent.key for parent in parents if parent.key[0] == "management"]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    dataset = old.get_model("management", "DataSet").objects.create(name="Old")
    TrainingRun = old.get_model("management", "TrainingRun")
    snapshot = {
        "epochs": 1,
        "batch_size": 8,
        "image_size": 16,
        "color_mode": "rgb",
        "validation_split": 0,
        "verbose": 0,
    }
    splits = {"train": [1, 2, 3], "validation": [4, 5], "test": []}
    report = {"count": 2, "accuracy": 0.5, "labels": ["a", "b"], "predictions": [[4, 0, 0.9], [5, 0, 0.6]]}
    trained = TrainingRun.objects.create(
        dataset=dataset,
        status="succeeded",
        labels=["a", "b"],
        splits=splits,
        evaluation={"validation": report},
        **snapshot,
    )
    checked = old.get_model("management", "HealthCheck").objects.create(
        dataset=dataset, status="succeeded", report={"images": 2, "label_quality": {"4": 0.25, "5": 0.75}}
    )
    cancelled = TrainingRun.objects.create(dataset=dataset, status="cancelled", labels=["a"], **snapshot)

    executor = MigrationExecutor(connection)
    executor.migrate([MIGRATION])
    new = executor.loader.project_state([MIGRATION]).apps
    runs = new.get_model("management", "TrainingRun").objects
    data = new.get_model("management", "RunData").objects
    summary = {key: value for key, value in report.items() if key != "predictions"}
    assert runs.get(pk=trained.pk).evaluation == {"validation": {**summary, "predictions_stored": True}}
    moved = data.get(run_id=trained.pk)
    assert moved.splits == splits and moved.predictions == {"validation": report["predictions"]}
    assert not data.filter(run_id=cancelled.pk).exists() and runs.get(pk=cancelled.pk).evaluation == {}

    check = new.get_model("management", "HealthCheck").objects.get(pk=checked.pk)
    assert (check.report, check.label_quality) == ({"images": 2}, {"4": 0.25, "5": 0.75})

    executor = MigrationExecutor(connection)
    executor.migrate(before)  # and back, as it was
    back = executor.loader.project_state(before).apps.get_model("management", "TrainingRun").objects
    assert (back.get(pk=trained.pk).splits, back.get(pk=trained.pk).evaluation) == (splits, {"validation": report})
    checks = executor.loader.project_state(before).apps.get_model("management", "HealthCheck").objects
    assert checks.get(pk=checked.pk).report == {"images": 2, "label_quality": {"4": 0.25, "5": 0.75}}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
