"""Fixtures the API tests share: a client signed in as the administrator, or as a user with given permissions."""

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient


@pytest.fixture
def api(admin_user) -> APIClient:
    """An API client authenticated as a superuser."""
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def api_as(db):
    """A factory: an API client authenticated as a new user holding the given permission codenames."""
    count = 0

    def client_with(*codenames: str) -> APIClient:
        nonlocal count
        count += 1
        user = User.objects.create_user(f"user{count}", password="a-long-pass-phrase-9")
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
        client = APIClient()
        client.force_authenticate(User.objects.get(pk=user.pk))  # a fresh object: permissions are cached
        return client

    return client_with
