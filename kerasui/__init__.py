# Loaded with Django, so that enqueueing a run uses this project's Celery app and settings.
from kerasui.celery import app as celery_app

__all__ = ["celery_app"]
