from django.apps import AppConfig


class ManagementConfig(AppConfig):
    """Datasets, their images, training runs and the admin that manages them."""

    name = "management"
    verbose_name = "KerasUI"
