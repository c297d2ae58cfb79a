"""Broken input of every kind gets a 4xx JSON answer, never a 500."""

import pytest
from rest_framework.test import APIClient

CASES = [
    ("get", "/api/dataset/99999999999999999999999/", None, None),
    ("get", "/api/datasetitem/?dataset=99999999999999999999999", None, None),
    ("get", "/api/trainingrun/?dataset=-1", None, None),
    ("get", "/api/datasetitem/?page_size=abc&page=x", None, None),
    ("post", "/api/dataset/", [1, 2], "json"),
    ("post", "/api/dataset/", "null", "rawjson"),
    ("post", "/api/dataset/", {"name": None, "epochs": "many", "validation_split": "NaN"}, "json"),
    ("post", "/api/dataset/", '{"name": "x", "validation_split": 1e400, "epochs": NaN}', "rawjson"),
    ("post", "/api/dataset/", {"name": "\x00bad"}, "json"),
    ("post", "/api/test/", [1, 2], "json"),
    ("post", "/api/test/", {"dataset": [1], "images": "abc"}, "json"),
    ("post", "/api/test/", {"dataset": {"a": 1}, "images": [None, 3]}, "json"),
    ("post", "/api/test/", "\xff\xfe", "rawjson"),
    ("post", "/api/datasetitem/", {"dataset": "x", "label": ["a"], "image": {"x": 1}}, "json"),
    ("post", "/api/users/", {"username": "", "groups": ["nope"], "email": "x"}, "json"),
    ("post", "/api/users/", {"username": "a" * 500}, "json"),
    ("patch", "/api/users/1/", {"password": None}, "json"),
    ("post", "/api/dataset/1/upload/", {"file": "not a file", "label": "x" * 500}, "multipart"),
    ("post", "/api/trainingrun/abc/cancel/", None, None),
    ("get", "/api/trainingrun/1/log/", None, None),
    ("delete", "/api/users/99999999999999999999999/", None, None),
    ("post", "/api/dataset/1/validate/", {"process": False, "architecture": "k\u00f35i6", "image_size": 585}, "json"),
    ("patch", "/api/dataset/1/", {"process": ["model.add(Flatten())"]}, "json"),
    ("patch", "/api/dataset/abc/", {"process": "model.add(Flatten())"}, "json"),
]


@pytest.mark.parametrize("method, url, data, fmt", CASES)
def test_broken_input_is_a_4xx_json_answer(admin_user, colour_dataset, method, url, data, fmt):
    client = APIClient()
    client.force_authenticate(admin_user)
    if fmt == "rawjson":
        response = getattr(client, method)(url, data, content_type="application/json")
    elif data is None:
        response = getattr(client, method)(url)
    else:
        response = getattr(client, method)(url, data, format=fmt)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response.content[:200]


def test_a_request_over_the_upload_limit_is_refused_before_it_is_read(admin_user, db, settings, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.models import DataSet

    settings.KERASUI_MAX_UPLOAD_BYTES = 10_000
    dataset = DataSet.objects.create(name="Limits")
    api = APIClient()
    api.force_authenticate(admin_user)
    big = SimpleUploadedFile("big.zip", b"0" * 20_000)
    response = api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": big})
    assert response.status_code == 413
    assert "at most 10000 are accepted (KERASUI_MAX_UPLOAD_BYTES)" in response.json()["detail"]
    client.force_login(admin_user)
    big = SimpleUploadedFile("big.zip", b"0" * 20_000)
    page = client.post("/admin/management/dataset/upload/", {"dataset": dataset.pk, "file": big})
    assert page.status_code == 413 and b"KERASUI_MAX_UPLOAD_BYTES" in page.content
    small = api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("small.zip", b"0" * 100)})
    assert small.status_code == 400  # under the limit it is read, and refused for what it is
