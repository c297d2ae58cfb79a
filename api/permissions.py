"""Who may do what through the API."""

from rest_framework import permissions


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
