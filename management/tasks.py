"""Celery finds the app's tasks here (autodiscovery): they are the job system's (jobs/tasks.py)."""

from jobs.tasks import run_job, start_watchdog  # noqa: F401 - importing registers them with the worker
