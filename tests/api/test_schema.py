"""The OpenAPI schema validates and matches the routes; the docs page needs no CDN; CORS is opt-in."""

import pytest
import yaml
from django.urls import Resolver404, resolve
from openapi_spec_validator import validate
from rest_framework.test import APIClient

ROUTES = {
    "/api/users/": {"get", "post"},
    "/api/users/{id}/": {"get", "put", "patch", "delete"},
    "/api/dataset/": {"get", "post"},
    "/api/dataset/{id}/": {"get", "put", "patch", "delete"},
    "/api/dataset/{id}/upload/": {"post"},
    "/api/dataset/{id}/suggestions/": {"get"},
    "/api/dataset/{id}/suggestions/accept/": {"post"},
    "/api/dataset/{id}/label/": {"post"},
    "/api/dataset/{id}/train/": {"post"},
    "/api/dataset/{id}/validate/": {"post"},
    "/api/dataset/{id}/model/": {"get"},
    "/api/dataset/{id}/model/metadata/": {"get"},
    "/api/dataset/{id}/import_model/": {"post"},
    "/api/datasetitem/": {"get", "post"},
    "/api/datasetitem/{id}/": {"get", "put", "patch", "delete"},
    "/api/trainingrun/": {"get"},
    "/api/trainingrun/{id}/": {"get", "delete"},
    "/api/trainingrun/{id}/cancel/": {"post"},
    "/api/trainingrun/{id}/resume/": {"post"},
    "/api/trainingrun/{id}/promote/": {"post"},
    "/api/trainingrun/compare/": {"get"},
    "/api/trainingrun/{id}/model/": {"get"},
    "/api/trainingrun/{id}/log/": {"get"},
    "/api/trainingrun/{id}/confusion/": {"get"},
    "/api/trainingrun/{id}/explain/{item_id}/": {"get"},
    "/api/test/": {"post"},
    "/api/health/": {"get"},
    "/api/starting-points/": {"get"},
    "/api/dataset/{id}/health/": {"get", "post"},
    "/api/dataset/{id}/health/keep/": {"post"},
    "/api/dataset/{id}/health/keep_one/": {"post"},
    "/api/healthcheck/{id}/": {"get"},
    "/api/healthcheck/{id}/cancel/": {"post"},
    "/api/exportjob/": {"get"},
    "/api/exportjob/{id}/": {"get"},
    "/api/exportjob/{id}/cancel/": {"post"},
    "/api/importjob/": {"get"},
    "/api/importjob/{id}/": {"get"},
    "/api/importjob/{id}/cancel/": {"post"},
}


@pytest.fixture
def schema(db):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate(schema)


def test_the_schema_documents_exactly_the_routes(schema):
    documented = {path: set(operations) - {"parameters"} for path, operations in schema["paths"].items()}
    assert documented == ROUTES
    for path in documented:
        try:
            resolve(path.replace("{id}", "1").replace("{item_id}", "2"))
        except Resolver404:  # pragma: no cover - the assertion says which
            pytest.fail(f"{path} is documented but not routed")


def test_multipart_bodies_are_documented_as_file_uploads(schema):
    def multipart(path, method="post"):
        body = schema["paths"][path][method]["requestBody"]["content"]["multipart/form-data"]["schema"]
        name = body["$ref"].rsplit("/", 1)[-1]
        return schema["components"]["schemas"][name]["properties"]

    assert multipart("/api/dataset/{id}/upload/")["file"]["format"] == "binary"
    assert multipart("/api/datasetitem/")["image"]["format"] == "binary"
    assert multipart("/api/test/")["image"]["format"] == "binary"
    assert multipart("/api/test/")["images"]["items"]["format"] == "binary"
    json_item = schema["paths"]["/api/datasetitem/"]["post"]["requestBody"]["content"]["application/json"]
    name = json_item["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][name]["properties"]["image"]["format"] == "byte"


def test_oauth2_flows_and_scopes_are_documented(schema):
    oauth = schema["components"]["securitySchemes"]["oauth2"]
    assert set(oauth["flows"]) == {"password", "clientCredentials"}
    assert set(oauth["flows"]["password"]["scopes"]) == {"read", "write", "predict", "metrics"}
    assert {"oauth2": ["predict"]} in schema["paths"]["/api/test/"]["post"]["security"]
    assert {"oauth2": ["write"]} in schema["paths"]["/api/dataset/"]["post"]["security"]
    assert {"oauth2": ["read"]} in schema["paths"]["/api/dataset/"]["get"]["security"]
    assert schema["paths"]["/api/health/"]["get"].get("security") in (None, [{}], [])


def test_the_docs_page_loads_its_scripts_from_the_app(db):
    page = APIClient().get("/api/docs/").content.decode()
    assert "swagger-ui" in page and "/api/docs/?script=" in page  # its start-up script is a file (the CSP)
    assert "cdn" not in page.lower() and "https://" not in page
    assert "/api/schema/" in APIClient().get("/api/docs/?script=").content.decode()
    script = APIClient().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert script.status_code == 200


def test_cors_is_closed_by_default_and_opens_to_configured_origins(db, settings):
    preflight = {
        "HTTP_ORIGIN": "https://app.example.com",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    }
    closed = APIClient().options("/api/test/", **preflight)
    assert "Access-Control-Allow-Origin" not in closed
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    opened = APIClient().options("/api/test/", **preflight)
    assert opened["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = APIClient().options(
        "/api/test/", HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in other
    admin_page = APIClient().options("/admin/", **preflight)
    assert "Access-Control-Allow-Origin" not in admin_page
