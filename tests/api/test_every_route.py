"""Every route of the API and of the admin's own pages, with every method (and a browser's Accept), answers
below 500 (issue 30): an undeclared method is a 405, a bad parameter a 400 naming it, never a traceback."""

import re

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver

from datasets.models import DataSetItem
from health.models import HealthCheck
from training.services import training_run_create

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Routes whose GET makes a model file (an export in a subprocess): walked with a run that has none.
GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def routes(resolver=None, prefix=""):
    """(route text, pattern) for every pattern under /api/ and /admin/management/."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        text = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from routes(pattern, text)
        elif isinstance(pattern, URLPattern):
            yield text


def concrete(route: str, ids: dict[str, int]) -> str | None:
    """The route with each parameter filled in by the id of an object of its kind (or a plain value)."""
    path = route.replace("^", "").replace("$", "").replace("\\.", ".").replace("/?", "/")
    kind = next((name for name in ids if f"{name}/" in path or f"{name}_id" in path), "dataset")

    def value(name: str) -> str:
        if name == "format":
            return "json"
        if name in {"item_id"}:
            return str(ids["datasetitem"])
        if name in {"run_id"}:
            return str(ids["trainingrun"])
        if name in {"dataset_id"}:
            return str(ids["dataset"])
        if name in {"path"}:
            return "datasets/nothing.png"
        if name in {"split"}:
            return "validation"
        if name in {"object_id"}:
            return str(ids[kind])
        return str(ids.get(kind, 1))

    path = GROUP.sub(lambda match: value(match.group(1)), path)
    path = CONVERTER.sub(lambda match: value(match.group(2)), path)
    if any(character in path for character in "()[]*+?\\"):
        return None
    return "/" + path.lstrip("/")


@pytest.fixture
def world(colour_dataset, admin_user):
    run = training_run_create(dataset=colour_dataset)  # queued: no model, so no download makes an export
    check = HealthCheck.objects.create(dataset=colour_dataset, status=HealthCheck.Status.SUCCEEDED)
    other = User.objects.create_user("someone", password="a-long-pass-phrase-9")
    return {
        "healthcheck": check.pk,
        "datasetitem": DataSetItem.objects.filter(dataset=colour_dataset).first().pk,
        "trainingrun": run.pk,
        "users": other.pk,
        "user": other.pk,
        "dataset": colour_dataset.pk,
    }


def test_every_new_route_with_every_method_answers_below_500(admin_client, world):
    paths = sorted(
        {
            path
            for route in routes()
            if (path := concrete(route, world))
            and (path.startswith("/api/") or path.startswith("/admin/management/"))
            # Validating starts a TensorFlow process (15-20 s each here) and the demo makes 600 images:
            # their refusals are tested in test_training_api.py and test_admin.py.
            and "/validate/" not in path
            and "/demo/" not in path
        }
    )
    assert len(paths) > 40
    admin_client.raise_request_exception = False  # collect every 500 instead of stopping at the first
    failures = []
    # Deletions last, so every other request finds the objects.
    for method in [*METHODS[:-2], "OPTIONS", "DELETE"]:
        for path in paths:
            for accept in ("application/json", "text/html"):
                response = admin_client.generic(method, path, HTTP_ACCEPT=accept)
                if response.status_code >= 500:
                    failures.append(f"{method} {path} ({accept}): {response.status_code}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "query",
    ["ids=%C2%B2,1", "ids=1,%C2%B2", "ids=%EF%BC%91,%EF%BC%92"],  # '²', fullwidth digits
)
def test_compare_with_odd_ids_is_a_400_naming_ids(admin_client, world, query):
    response = admin_client.get(f"/api/trainingrun/compare/?{query}")
    assert response.status_code == 400 and "ids" in response.json(), response.content


@pytest.mark.parametrize("check", ["abc", "1e3"])
def test_the_admins_health_cancel_with_a_bad_check_is_not_a_500(admin_client, world, check):
    url = f"/admin/management/dataset/{world['dataset']}/health/cancel/"
    response = admin_client.post(url, {"check": check})
    assert response.status_code < 500
