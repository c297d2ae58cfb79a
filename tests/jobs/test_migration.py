"""Migration 0014 gives runs and health checks the one job shape and keeps every existing row's data."""

import pytest


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_runs_and_checks_with_progress_0_to_1_and_one_word_for_success():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("management", "0013_dataset_health")], [("management", "0014_jobs")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    dataset = old.get_model("management", "DataSet").objects.create(name="Old")
    other = old.get_model("management", "DataSet").objects.create(name="Other")
    snapshot = {
        "epochs": 4,
        "batch_size": 8,
        "image_size": 16,
        "color_mode": "rgb",
        "validation_split": 0,
        "verbose": 0,
    }
    TrainingRun = old.get_model("management", "TrainingRun")
    done = TrainingRun.objects.create(
        dataset=dataset, status="succeeded", progress=100, labels=["a", "b"], worker="w:1", error="", **snapshot
    )
    halfway = TrainingRun.objects.create(dataset=other, status="running", progress=37.5, labels=["a"], **snapshot)
    HealthCheck = old.get_model("management", "HealthCheck")
    checked = HealthCheck.objects.create(dataset=dataset, status="done", progress=1.0, report={"images": 3})
    failed = HealthCheck.objects.create(dataset=other, status="failed", progress=0.4, error="lost")

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    runs = new.get_model("management", "TrainingRun").objects
    assert (runs.get(pk=done.pk).progress, runs.get(pk=done.pk).status) == (1.0, "succeeded")
    assert runs.get(pk=done.pk).labels == ["a", "b"] and runs.get(pk=done.pk).worker == "w:1"
    assert runs.get(pk=halfway.pk).progress == pytest.approx(0.375)
    checks = new.get_model("management", "HealthCheck").objects
    assert checks.get(pk=checked.pk).status == "succeeded" and checks.get(pk=checked.pk).report == {"images": 3}
    assert (checks.get(pk=failed.pk).status, checks.get(pk=failed.pk).error) == ("failed", "lost")

    executor = MigrationExecutor(connection)
    executor.migrate(before)  # and back, as it was
    back = executor.loader.project_state(before).apps
    assert back.get_model("management", "TrainingRun").objects.get(pk=done.pk).progress == 100
    assert back.get_model("management", "HealthCheck").objects.get(pk=checked.pk).status == "done"
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
