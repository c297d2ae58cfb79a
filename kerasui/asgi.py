"""ASGI entry point; starting it also resumes queued training runs."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")

from kerasui.config import stop_on_bad_settings  # noqa: E402

stop_on_bad_settings()
application = get_asgi_application()

from jobs import runner  # noqa: E402 - needs the app registry loaded above
from management.journal import media_journals_recover  # noqa: E402

try:
    media_journals_recover()
except Exception:  # noqa: BLE001 - e.g. the database is not migrated yet; serving comes first
    import logging

    logging.getLogger(__name__).warning("uploads interrupted by a crash were not cleaned up", exc_info=True)
runner.start()
