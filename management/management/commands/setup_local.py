"""First-run setup for local use: an administrator and an OAuth2 client, their secrets printed once."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from oauth2_provider.models import get_application_model

CLIENT_NAME = "kerasui-local"


# How to call manage.py with this project's interpreter, for the hints printed below.
MANAGE = (r".venv\Scripts\python" if os.name == "nt" else ".venv/bin/python") + " manage.py"


class Command(BaseCommand):
    help = "Create an administrator and a local OAuth2 client if there are none yet."

    def handle(self, *args, **options):
        self._ensure_admin()
        self._ensure_client()

    def _ensure_admin(self):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(
            username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password
        )
        self.stdout.write(self.style.SUCCESS(f"Created the administrator '{username}'."))
        if generated:
            self.stdout.write(
                f"  username: {username}\n  password: {password}\n"
                f"  (shown once; change it with: {MANAGE} changepassword {username})"
            )

    def _ensure_client(self):
        Application = get_application_model()
        if Application.objects.filter(name=CLIENT_NAME).exists():
            return
        User = get_user_model()
        owner = User.objects.filter(is_superuser=True).order_by("id").first()
        client_id = secrets.token_urlsafe(24)
        client_secret = secrets.token_urlsafe(36)
        Application.objects.create(
            name=CLIENT_NAME,
            user=owner,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_PASSWORD,
            client_id=client_id,
            client_secret=client_secret,
        )
        self.stdout.write(self.style.SUCCESS(f"Created the OAuth2 client '{CLIENT_NAME}' (password grant)."))
        self.stdout.write(
            f"  client id:     {client_id}\n  client secret: {client_secret}\n"
            f"  (shown once; the secret is stored hashed. Make more with: {MANAGE} createapplication)"
        )
