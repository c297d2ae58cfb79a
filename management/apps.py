from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_migrate


def create_cache_table(sender, using="default", verbosity=1, **kwargs):
    """The database cache's table (throttle counters), made by `migrate` as every other table is.

    Idempotent: `createcachetable` skips a table that exists and caches that are not in the database.
    """
    call_command("createcachetable", database=using, verbosity=max(0, verbosity - 1))


class ManagementConfig(AppConfig):
    """Datasets, their images, training runs and the admin that manages them."""

    name = "management"
    verbose_name = "KerasUI"

    def ready(self):
        post_migrate.connect(create_cache_table, sender=self, dispatch_uid="kerasui-create-cache-table")
