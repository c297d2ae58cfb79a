"""Who may do what through the API: token scopes first, then Django's model permissions."""

from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework import permissions

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


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django's model permissions, the view permission included for reading."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


class CanPredict(permissions.BasePermission):
    """Predicting needs the permission to view datasets."""

    message = "you need the permission 'management.view_dataset' to predict"

    def has_permission(self, request, view):
        return bool(request.user and request.user.has_perm("management.view_dataset"))


class IsSuperuser(permissions.BasePermission):
    """Accounts are managed by administrators (superusers) only."""

    message = "only administrators (superusers) may manage users"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_superuser)


class CanReadMetrics(permissions.BasePermission):
    """The Prometheus metrics are for staff: a staff session or Basic login, or a staff account's
    token with the `metrics` scope (which no token gets unless it asks for it)."""

    message = "the metrics are for staff accounts (and a token needs the 'metrics' scope)"

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser)):
            return False
        token = request.auth
        if hasattr(token, "scope") and not token.allow_scopes([METRICS]):
            self.message = f"this token lacks the '{METRICS}' scope (it has: {token.scope or 'none'})"
            return False
        return True
