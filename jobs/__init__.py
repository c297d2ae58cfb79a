"""The one job system: every long task (training, health checks, exports, zip imports) is a job kind.

registry (the kinds), lifecycle (the only writer of a job's status), runner (thread | Celery, which
starts `manage.py job KIND ID`), process (what that process does), watchdog, budgets.
"""
