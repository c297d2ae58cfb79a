"""Who may do what through the API: token scopes first, then the use cases' rules (management/permissions.py)
or Django's model permissions."""

from django.core.exceptions import ValidationError
from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework import permissions

from datasets.models import DataSet
from management import permissions as rules
from ml.models import DEFAULT_PROCESS

READ, WRITE, PREDICT, METRICS = "read", "write", "predict", "metrics"


class TokenScopes(TokenHasScope):
    """An OAuth2 token acts only within its scopes; session and Basic authentication have no scopes.

    `read` lets a token GET, `write` lets it create, change, upload, train and cancel, and
    `predict` lets it use /api/test/ (a view sets `required_scope` to ask for another scope).
    """

    def get_scopes(self, request, view):
        required = getattr(view, "required_scope", None)
        if required is None:
            required = READ if request.method in permissions.SAFE_METHODS else WRITE
        return [required]

    def has_permission(self, request, view):
        token = request.auth
        if not hasattr(token, "scope"):
            return True  # not an OAuth2 token: session or Basic authentication
        required = self.get_scopes(request, view)
        if token.allow_scopes(required):
            return True
        self.message = f"this token lacks the '{required[0]}' scope (it has: {token.scope or 'none'})"
        return False


class UseCasePermissions(permissions.DjangoModelPermissions):
    """A view's actions (a plain view's HTTP methods) listed in its `use_cases` need those use cases'
    permissions (management/permissions.py); every other action needs Django's model permission for its
    method, the view permission for reading. The one permission class shape of every API view.

    As in Django's admin, the change permission includes viewing: a PUT or PATCH answers with the object,
    so whoever may change an object may also GET it (the two answers never disagree)."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view):
        # A viewset's use cases are keyed by action; a plain view's (health's) by HTTP method.
        key = getattr(view, "action", None) or ("GET" if request.method == "HEAD" else request.method)
        needed = getattr(view, "use_cases", {}).get(key)
        if needed is None:
            if getattr(view, "queryset", None) is None and not hasattr(view, "get_queryset"):
                # A plain view does nothing it does not declare (405 follows), and only for a user.
                return bool(request.user and request.user.is_authenticated)
            if request.method in {"GET", "HEAD"} and request.user and request.user.is_authenticated:
                meta = self._queryset(view).model._meta
                if request.user.has_perm(f"{meta.app_label}.change_{meta.model_name}"):
                    return True
            return super().has_permission(request, view)
        for rule in needed:
            if not rule.allows(request.user):
                self.message = rule.refusal(request.user)
                return False
        return True


class CanSetModelCode(permissions.BasePermission):
    """Sending a dataset's model code other than the one it has is running code on the server: its own permission.

    Checked on the view's actions named in `sends_model_code`.
    """

    message = {"process": [rules.MODEL_CODE_REFUSAL]}

    def has_permission(self, request, view):
        if view.action not in getattr(view, "sends_model_code", ()) or not hasattr(request.data, "get"):
            return True
        code = request.data.get("process")
        if code is None:
            return True
        # Whatever is sent counts as code: the serializer turns a number into its text.
        code = code if isinstance(code, str) else str(code)
        if view.kwargs.get("pk") is not None:
            try:
                current = DataSet.objects.filter(pk=view.kwargs["pk"]).values_list("process", flat=True).first()
            except (TypeError, ValueError, ValidationError):
                current = None
            if current is None:
                return True  # no such dataset: the view answers 404
        else:
            current = DEFAULT_PROCESS
        return rules.may_send_model_code(request.user, code=code, current=current)


class CanViewDatasets(permissions.BasePermission):
    """Reading what a dataset may be set to (its starting points) needs the permission to view datasets."""

    message = f"you need the permission '{rules.VIEW_DATASETS.permissions[0]}'"

    def has_permission(self, request, view):
        return rules.VIEW_DATASETS.allows(request.user)


class CanPredict(permissions.BasePermission):
    """Predicting needs the permission to view datasets."""

    message = f"you need the permission '{rules.PREDICT.permissions[0]}' to predict"

    def has_permission(self, request, view):
        return rules.PREDICT.allows(request.user)


class IsSuperuser(permissions.BasePermission):
    """Accounts are managed by administrators (superusers) only."""

    message = "only administrators (superusers) may manage users"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_superuser)


class CanReadMetrics(permissions.BasePermission):
    """The Prometheus metrics are for staff (management/permissions.py): a staff session or Basic login,
    or a staff account's token with the `metrics` scope (which no token gets unless it asks for it)."""

    message = rules.METRICS_REFUSAL

    def has_permission(self, request, view):
        if not rules.may_read_metrics(request.user):
            return False
        token = request.auth
        if hasattr(token, "scope") and not token.allow_scopes([METRICS]):
            self.message = f"this token lacks the '{METRICS}' scope (it has: {token.scope or 'none'})"
            return False
        return True
