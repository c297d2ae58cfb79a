"""WSGI entry point; starting it also resumes queued training runs."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")

application = get_wsgi_application()

from management import runners  # noqa: E402 - needs the app registry loaded above

runners.start()
