from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The REST API over the management services."""

    name = "api"
    verbose_name = "API"
