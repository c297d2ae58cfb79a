"""The API root lists every top-level resource, and a current model's metadata names the input dtype
that labels.json and the README name."""

import pytest
from django.urls import reverse

from serving.exports import export_metadata
from serving.prediction import prediction_metadata


@pytest.mark.django_db
def test_the_api_root_links_every_top_level_resource(admin_client):
    answer = admin_client.get("/api/", HTTP_ACCEPT="application/json").json()
    for name in ("users", "dataset", "datasetitem", "trainingrun", "test", "starting-points", "health", "docs"):
        assert name in answer, name
    assert answer["test"].endswith(reverse("predict"))
    assert admin_client.get(answer["starting-points"], HTTP_ACCEPT="application/json").status_code == 200


def test_model_metadata_says_float32_as_labels_json_does(trained_dataset):
    metadata = prediction_metadata(dataset=trained_dataset).as_dict()
    assert metadata["input_dtype"].startswith("float32")
    assert export_metadata(trained_dataset.current_run)["input"].startswith("float32")
