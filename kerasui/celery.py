"""The Celery app of KerasUI workers: `celery -A kerasui worker -Q training -c 1`.

Configured from Django's settings (the `CELERY_` names); tasks live in each app's `tasks.py`.
"""

import os
import sys
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")

app = Celery("kerasui")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# `celery -A kerasui worker` with a wrong setting stops at once with one line, not a traceback: the
# command reads the configuration while it parses its own options, before any of Celery's signals.
if Path(sys.argv[0]).name in {"celery", "celery.exe", "__main__.py"} and "celery" in sys.argv[0]:
    from kerasui.config import stop_on_bad_settings

    stop_on_bad_settings()
