"""Who may do what, declared once: one rule per use case, read by the API and by the admin alike.

A rule names the Django permissions its use case needs, all of them. api/permissions.py checks them
for the API's actions, admin.py for its buttons and pages. Creating, changing, deleting and viewing
rows are Django's own model permissions in both doors (DRF's mapping, the admin's has_*_permission).

Training (queueing, cancelling and resuming a run) and promoting a version need `change_dataset`:
they change what a dataset does. Not `add_dataset`, which DRF's mapping of POST would ask for.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets.models import MODEL_CODE_PERMISSION


@dataclass(frozen=True)
class Rule:
    """A use case and the permissions it needs."""

    name: str
    permissions: tuple[str, ...]

    def missing(self, user) -> list[str]:
        """The permissions `user` lacks for this use case (all of them for an anonymous user)."""
        return [permission for permission in self.permissions if not (user and user.has_perm(permission))]

    def allows(self, user) -> bool:
        return not self.missing(user)

    def refusal(self, user) -> str:
        missing = self.missing(user)
        return f"you need the permission '{missing[0]}'" if missing else ""


VIEW_DATASETS = Rule("view", ("management.view_dataset",))
PREDICT = Rule("predict", ("management.view_dataset",))
EDIT_DATASET = Rule("edit_dataset", ("management.change_dataset",))  # change its options, validate its model
ADD_IMAGES = Rule("add_images", ("management.add_datasetitem",))  # one image, many, or a zip
TRAIN = Rule("train", ("management.change_dataset",))  # queue a run, cancel it, resume it
SET_MODEL_CODE = Rule("set_model_code", (MODEL_CODE_PERMISSION,))  # the code runs on the server
PROMOTE = Rule("promote", ("management.change_dataset",))  # make a version the current model
EXPORT = Rule("export", ("management.view_trainingrun",))  # download a model, any format, and its log
COMPARE = Rule("compare", ("management.view_trainingrun",))  # runs side by side: whoever may view runs
# A run's images: what its model looked at in one (a heatmap), the images behind a confusion cell.
INSPECT_RUN = Rule("inspect_run", ("management.view_trainingrun", "management.view_datasetitem"))
# A model file is close to code (it answers predictions): importing one needs the model-code permission too.
IMPORT = Rule("import_model", ("management.change_dataset", MODEL_CODE_PERMISSION))

# Dataset health: reading a report shows the images; a check is a long job on the dataset; its actions
# change or delete images, as the item endpoints do.
VIEW_HEALTH = Rule("view_health", ("management.view_dataset", "management.view_datasetitem"))
CHECK_HEALTH = Rule("check_health", ("management.change_dataset",))  # start a check, cancel it
RELABEL = Rule("relabel", ("management.change_datasetitem",))  # relabel a suspect, or keep it as it is
VIEW_IMAGES = Rule("view_images", ("management.view_dataset", "management.view_datasetitem"))  # suggestions too
LABEL_IMAGES = Rule("label_images", ("management.change_datasetitem",))  # accept suggestions, label a list
DELETE_IMAGES = Rule("delete_images", ("management.delete_datasetitem",))  # delete, or keep one of duplicates

LOAD_DEMO = Rule("load_demo", ("management.add_dataset", "management.add_datasetitem"))  # a dataset and its images

RULES = (
    VIEW_DATASETS,
    PREDICT,
    EDIT_DATASET,
    ADD_IMAGES,
    TRAIN,
    SET_MODEL_CODE,
    PROMOTE,
    EXPORT,
    COMPARE,
    INSPECT_RUN,
    IMPORT,
    LOAD_DEMO,
    VIEW_HEALTH,
    CHECK_HEALTH,
    RELABEL,
    DELETE_IMAGES,
    VIEW_IMAGES,
    LABEL_IMAGES,
)


def allowed(user) -> dict[str, bool]:
    """Every use case by name and whether `user` may do it: what the admin's pages show as buttons."""
    return {rule.name: rule.allows(user) for rule in RULES}


def _same_code(code: str, current: str) -> bool:
    return code.replace("\r\n", "\n").strip() == current.replace("\r\n", "\n").strip()


def may_send_model_code(user, *, code: str | None, current: str) -> bool:
    """Sending model code is setting it, unless it is the code the dataset already has (a GET, edited, PUT)."""
    return code is None or _same_code(code, current) or SET_MODEL_CODE.allows(user)


MODEL_CODE_REFUSAL = (
    f"setting the model code needs the permission '{MODEL_CODE_PERMISSION}': "
    "the code runs on the server; leave 'process' out to keep the current code"
)


def may_read_metrics(user) -> bool:
    """The Prometheus metrics (/metrics) tell how the server is used and by how much: staff accounts only."""
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


METRICS_REFUSAL = "the metrics are for staff accounts (and a token needs the 'metrics' scope)"


# Which permission a media folder needs: images belong to items, models and logs to runs. Served by
# api.views.MediaView, which accepts the session and the API's credentials alike.
MEDIA_PERMISSIONS = {
    "datasets": "management.view_datasetitem",
    "models": "management.view_trainingrun",
    "logs": "management.view_trainingrun",
    "exports": "management.view_trainingrun",
    "weights": "management.view_dataset",
}


def media_permissions(relative: str) -> tuple[str, ...] | None:
    """The permissions a media file needs (None: not served). A health check's log tells about a
    dataset's images, so it needs what reading the check's report needs (VIEW_HEALTH), not a run's."""
    parts = relative.strip("/").split("/")
    if parts[0] == "logs" and len(parts) == 2 and parts[1].startswith("health_"):
        return VIEW_HEALTH.permissions
    permission = MEDIA_PERMISSIONS.get(parts[0])
    return (permission,) if permission else None
