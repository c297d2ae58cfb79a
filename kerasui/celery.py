"""The Celery app of KerasUI workers: `celery -A kerasui worker -Q training -c 1`.

Configured from Django's settings (the `CELERY_` names); tasks live in each app's `tasks.py`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")

app = Celery("kerasui")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
