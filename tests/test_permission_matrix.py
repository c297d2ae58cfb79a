"""Every use case through both doors, the API and the admin, for a user with its permissions and without each.

The rules are declared once (management/permissions.py); this walks what each door does with them. A
request that is allowed may still be refused for its content (400, 409): only 403 means "not allowed".
"""

from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from datasets.models import DataSet
from management import permissions as rules

CUSTOM_CODE = "model.add(layers.Flatten())\n"


@dataclass(frozen=True)
class Door:
    method: str
    url: str  # {dataset} and {run} are filled in
    data: dict = field(default_factory=dict)
    format: str | None = None


@dataclass(frozen=True)
class UseCase:
    rule: rules.Rule
    api: Door
    admin: Door
    # What a user needs besides the rule to reach the door at all.
    base: tuple[str, ...] = ()


def dataset_form(dataset: DataSet, **changes) -> dict:
    """The admin's change form of `dataset`, as a browser sends it back."""
    fields = [
        "name", "process", "epochs", "batch_size", "image_size", "color_mode", "validation_split", "test_split",
        "verbose", "architecture", "learning_rate", "early_stopping_patience", "augment_flip", "augment_rotation",
        "augment_zoom", "augment_contrast",
    ]  # fmt: skip
    return {name: getattr(dataset, name) for name in fields} | changes


CASES = {
    "view": UseCase(
        rules.VIEW_DATASETS,
        api=Door("get", "/api/dataset/{dataset}/"),
        admin=Door("get", "/admin/management/dataset/{dataset}/change/"),
    ),
    "starting_points": UseCase(
        rules.VIEW_DATASETS,
        # The admin shows them as the dataset page's choice of starting point.
        api=Door("get", "/api/starting-points/"),
        admin=Door("get", "/admin/management/dataset/{dataset}/change/"),
    ),
    "edit_dataset": UseCase(
        rules.EDIT_DATASET,
        api=Door("patch", "/api/dataset/{dataset}/", {"epochs": 3}, "json"),
        admin=Door("post", "/admin/management/dataset/{dataset}/change/", {"epochs": 3}),
    ),
    "validate": UseCase(
        rules.EDIT_DATASET,
        # An image size the serializer refuses: allowed requests stop at 400, before building a model.
        api=Door("post", "/api/dataset/{dataset}/validate/", {"image_size": 1}, "json"),
        admin=Door("get", "/admin/management/dataset/{dataset}/validate/"),
    ),
    "add_images": UseCase(
        rules.ADD_IMAGES,
        api=Door("post", "/api/dataset/{dataset}/upload/"),
        admin=Door("post", "/admin/management/dataset/{dataset}/upload/"),
    ),
    "train": UseCase(
        rules.TRAIN,
        api=Door("post", "/api/dataset/{dataset}/train/"),
        admin=Door("post", "/admin/management/dataset/{dataset}/train/"),
    ),
    "cancel": UseCase(
        rules.TRAIN,
        api=Door("post", "/api/trainingrun/{run}/cancel/"),
        admin=Door("post", "/admin/management/trainingrun/{run}/cancel/"),
    ),
    "resume": UseCase(
        rules.TRAIN,
        api=Door("post", "/api/trainingrun/{run}/resume/"),
        admin=Door("post", "/admin/management/trainingrun/{run}/resume/"),
    ),
    "set_model_code": UseCase(
        rules.SET_MODEL_CODE,
        api=Door("patch", "/api/dataset/{dataset}/", {"process": CUSTOM_CODE}, "json"),
        admin=Door("post", "/admin/management/dataset/{dataset}/change/", {"process": CUSTOM_CODE}),
        base=("management.view_dataset", "management.change_dataset"),
    ),
    "promote": UseCase(
        rules.PROMOTE,
        api=Door("post", "/api/trainingrun/{run}/promote/"),
        admin=Door("post", "/admin/management/trainingrun/{run}/promote/"),
    ),
    "export": UseCase(
        rules.EXPORT,
        api=Door("get", "/api/trainingrun/{run}/model/"),
        admin=Door("get", "/admin/management/trainingrun/{run}/model/"),
    ),
    "compare": UseCase(
        rules.COMPARE,
        # One run twice is refused (400) by both doors once the permission let the request in.
        api=Door("get", "/api/trainingrun/compare/?ids={run},{run}"),
        admin=Door("get", "/admin/management/trainingrun/compare/?ids={run},{run}"),
    ),
    "inspect_run": UseCase(
        rules.INSPECT_RUN,
        # The run has no evaluation: allowed requests stop at 404.
        api=Door("get", "/api/trainingrun/{run}/confusion/?split=validation&true=red&predicted=blue"),
        admin=Door("get", "/admin/management/trainingrun/{run}/confusion/validation/2/0/"),
    ),
    "import": UseCase(
        rules.IMPORT,
        api=Door("post", "/api/dataset/{dataset}/import_model/"),
        admin=Door("get", "/admin/management/dataset/{dataset}/import_model/"),
    ),
    # Dataset health: allowed requests without items stop at 404 (never checked), 400 or a form error.
    "view_health": UseCase(
        rules.VIEW_HEALTH,
        api=Door("get", "/api/dataset/{dataset}/health/"),
        admin=Door("get", "/admin/management/dataset/{dataset}/health/"),
    ),
    "check_health": UseCase(
        rules.CHECK_HEALTH,
        api=Door("post", "/api/dataset/{dataset}/health/"),
        admin=Door("post", "/admin/management/dataset/{dataset}/health/check/"),
    ),
    "relabel": UseCase(
        rules.RELABEL,
        api=Door("post", "/api/dataset/{dataset}/health/keep/", {"kind": "label"}, "json"),
        admin=Door("post", "/admin/management/dataset/{dataset}/health/relabel/"),
    ),
    "delete_images": UseCase(
        rules.DELETE_IMAGES,
        api=Door("post", "/api/dataset/{dataset}/health/keep_one/", {}, "json"),
        admin=Door("post", "/admin/management/dataset/{dataset}/health/delete/"),
    ),
    "view_images": UseCase(
        rules.VIEW_IMAGES,
        api=Door("get", "/api/dataset/{dataset}/suggestions/"),
        admin=Door("get", "/admin/management/dataset/{dataset}/label/"),
    ),
    "label_images": UseCase(
        rules.LABEL_IMAGES,
        # No ids: an allowed request stops at 400, before labelling anything.
        api=Door("post", "/api/dataset/{dataset}/label/", {"ids": [], "label": "red"}, "json"),
        admin=Door("post", "/admin/management/dataset/{dataset}/label/set/", {"ids": "", "label": "red"}),
        base=("management.view_dataset", "management.view_datasetitem"),
    ),
    "predict": UseCase(
        rules.PREDICT,
        api=Door("post", "/api/test/", {"dataset": "{dataset}", "image": "not base64!"}, "json"),
        admin=Door("get", "/admin/management/dataset/test/?dataset={dataset}"),
    ),
}

MATRIX = [
    pytest.param(name, door, missing, id=f"{name}-{door}-{'without ' + missing if missing else 'allowed'}")
    for name, case in CASES.items()
    for door in ("api", "admin")
    for missing in (None, *case.rule.permissions)
]


def user_with(permissions: set[str], username: str = "someone") -> User:
    user = User.objects.create_user(username, password="a-long-pass-phrase-9", is_staff=True)
    codenames = [permission.split(".", 1)[1] for permission in permissions]
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="management", codename__in=codenames))
    return User.objects.get(pk=user.pk)


def knock(case: UseCase, door_name: str, user: User, dataset: DataSet):
    door = getattr(case, door_name)
    run = dataset.current_run_id
    url = door.url.format(dataset=dataset.pk, run=run)
    data = {
        key: value.format(dataset=dataset.pk) if isinstance(value, str) else value for key, value in door.data.items()
    }
    if door_name == "api":
        client = APIClient()
        client.force_authenticate(user)
        return getattr(client, door.method)(url, data, format=door.format)
    client = Client()
    client.force_login(user)
    if url.endswith("/change/") and door.method == "post":
        data = dataset_form(dataset, **data)
    return getattr(client, door.method)(url, data)


# Use cases that need no trained model walk a dataset without one (quicker to set up).
UNTRAINED = {"view_health", "check_health", "relabel", "delete_images", "view_images", "label_images"}


@pytest.mark.parametrize("name, door, missing", MATRIX)
def test_each_use_case_is_allowed_by_its_rule_in_both_doors(db, request, name, door, missing):
    trained_dataset = request.getfixturevalue("colour_dataset" if name in UNTRAINED else "trained_dataset")
    case = CASES[name]
    granted = (set(case.base) | set(case.rule.permissions)) - {missing}
    response = knock(case, door, user_with(granted), trained_dataset)
    saved = DataSet.objects.get(pk=trained_dataset.pk)
    if name == "set_model_code" and door == "admin":
        # The admin shows the code read-only to those who may not set it: the form saves, the code stays.
        assert response.status_code == 302
        assert (saved.process.strip() == CUSTOM_CODE.strip()) is (missing is None)
    elif missing is None:
        assert response.status_code != 403, (response.status_code, response.content[:300])
    else:
        assert response.status_code == 403, (response.status_code, response.content[:300])
        assert saved.process.strip() != CUSTOM_CODE.strip() and saved.epochs != 3
        assert not saved.runs.filter(status="queued").exists()
        assert not saved.health_checks.exists()
    if name == "set_model_code" and door == "api":
        assert (saved.process.strip() == CUSTOM_CODE.strip()) is (missing is None)


def test_every_rule_is_walked_through_both_doors():
    assert {case.rule for case in CASES.values()} >= set(rules.RULES) - {rules.LOAD_DEMO}


def test_training_needs_the_change_permission_not_the_add_permission(trained_dataset):
    adder = user_with({"management.add_dataset", "management.view_dataset"})
    for door in ("api", "admin"):
        assert knock(CASES["train"], door, adder, trained_dataset).status_code == 403
    assert not trained_dataset.runs.filter(status="queued").exists()


def test_model_code_sent_as_anything_but_text_still_needs_its_permission(trained_dataset):
    editor = APIClient()
    editor.force_authenticate(user_with({"management.view_dataset", "management.change_dataset"}))
    for code in (5, 1.5, False, ["import os"]):
        response = editor.patch(f"/api/dataset/{trained_dataset.pk}/", {"process": code}, format="json")
        assert response.status_code == 403 and "process" in response.json(), code
    assert DataSet.objects.get(pk=trained_dataset.pk).process == trained_dataset.process
