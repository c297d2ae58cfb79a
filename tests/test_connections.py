"""Database connections are kept between requests (checked before reuse), so SQLite's pragmas and
PostgreSQL's connection set-up are paid once per worker thread, not once per request."""

import json
import os
import subprocess
import sys

from django.conf import settings as django_settings

CODE = """
import json, django
django.setup()
from django.db import connection
from django.test import Client
from django.db.backends.signals import connection_created
opened = []
connection_created.connect(lambda sender, connection, **kwargs: opened.append(connection.alias))
client = Client(HTTP_HOST="localhost")
statuses = [client.get("/api/health/").status_code for _ in range(5)]
print(json.dumps({"statuses": statuses, "opened": len(opened), "max_age": connection.settings_dict["CONN_MAX_AGE"],
                  "health_checks": connection.settings_dict["CONN_HEALTH_CHECKS"]}))
"""


def test_a_worker_keeps_its_database_connection_between_requests(tmp_path):
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_TRAINING_BACKEND": "none",
        "DJANGO_SETTINGS_MODULE": "kerasui.settings",
    }
    root = django_settings.BASE_DIR
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=root, env=environment, check=True)
    completed = subprocess.run(
        [sys.executable, "-c", CODE], cwd=root, env=environment, capture_output=True, text=True, check=True
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [200] * 5
    assert result["max_age"] >= 60 and result["health_checks"] is True
    # /api/health/ reads the database: five requests open no new connection (one per request before).
    assert result["opened"] <= 1, result
