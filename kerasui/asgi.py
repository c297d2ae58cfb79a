"""ASGI entry point; starting it also resumes queued training runs."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")

application = get_asgi_application()

from management import runners  # noqa: E402 - needs the app registry loaded above

runners.start()
