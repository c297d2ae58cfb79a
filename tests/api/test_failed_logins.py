"""Failed credentials counted per address, whatever the username or client: beyond
KERASUI_FAILED_LOGIN_RATE every door answers 429 with Retry-After before it hashes anything (a guess
with a new username each time never trips the per-username lockout, and each costs a hash)."""

import base64
import secrets

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from oauth2_provider.models import get_application_model

from api.throttles import counters

Application = get_application_model()
PASSWORD = "the-right-pass-phrase-7"
LIMIT = 5


class CountingHasher(MD5PasswordHasher):
    """A cheap hasher that counts what the doors ask of it."""

    algorithm = "counting_md5"
    calls = 0

    def encode(self, password, salt):
        CountingHasher.calls += 1
        return super().encode(password, salt)

    def verify(self, password, encoded):
        CountingHasher.calls += 1
        return super().verify(password, encoded)


@pytest.fixture
def counted(settings, db):
    settings.PASSWORD_HASHERS = ["tests.api.test_failed_logins.CountingHasher"]
    settings.KERASUI_FAILED_LOGIN_RATE = f"{LIMIT}/day"  # no new window mid-test (bar midnight UTC)
    user = User.objects.create_superuser("boss", password=PASSWORD)
    for client_id, grant in (
        ("script-id", Application.GRANT_PASSWORD),
        ("service-id", Application.GRANT_CLIENT_CREDENTIALS),
    ):
        Application.objects.create(
            name=client_id,
            client_id=client_id,
            client_secret="the-client-secret",
            user=user,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=grant,
        )
    CountingHasher.calls = 0
    return user


def stranger() -> str:
    return f"guess-{secrets.token_hex(6)}"


def basic(client, username, password, address):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return client.get("/api/dataset/", HTTP_AUTHORIZATION=f"Basic {credentials}", REMOTE_ADDR=address)


def password_grant(client, username, password, address):
    data = {"grant_type": "password", "username": username, "password": password}
    data.update(client_id="script-id", client_secret="the-client-secret")
    return client.post("/o/token/", data, REMOTE_ADDR=address)


def client_credentials(client, client_id, secret, address):
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return client.post("/o/token/", data, REMOTE_ADDR=address)


def admin_login(client, username, password, address):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address)


def wrong(door, client, address):
    """A failed attempt through `door`: a new random username (or a wrong secret of the service)."""
    if door is client_credentials:
        return door(client, "service-id", stranger(), address)
    return door(client, stranger(), "not-the-password", address)


def right(door, client, address):
    if door is client_credentials:
        return door(client, "service-id", "the-client-secret", address)
    return door(client, "boss", PASSWORD, address)


FAILED = {basic: 401, password_grant: 400, client_credentials: 401, admin_login: 200}
DOORS = [basic, password_grant, client_credentials, admin_login]


def assert_too_many(door, response):
    assert response.status_code == 429, response.content[:300]
    assert 0 < int(response["Retry-After"]) <= 24 * 3600
    if door is admin_login:
        assert b"Too many failed logins from your address" in response.content
    else:
        body = response.json()
        assert "Too many failed logins from your address" in (body.get("detail") or body.get("error_description"))


@pytest.mark.parametrize("door", DOORS, ids=lambda door: door.__name__)
def test_an_address_guessing_new_usernames_gets_429_before_any_hash(door, counted, client):
    for _ in range(LIMIT):
        assert wrong(door, client, "10.1.1.1").status_code == FAILED[door]
    assert CountingHasher.calls >= LIMIT  # each failure cost at least one hash
    hashed = CountingHasher.calls
    for _ in range(3):
        assert_too_many(door, wrong(door, client, "10.1.1.1"))
    # Even the right credentials wait: the door refuses before it checks (and hashes) anything.
    assert_too_many(door, right(door, client, "10.1.1.1"))
    assert CountingHasher.calls == hashed

    # Another address is not concerned, and the right credentials pass there.
    assert right(door, client, "10.2.2.2").status_code in {200, 302}


def test_every_door_counts_against_the_same_address(counted, client):
    for door in DOORS[: LIMIT - 1]:
        assert wrong(door, client, "10.3.3.3").status_code == FAILED[door]
    assert wrong(basic, client, "10.3.3.3").status_code == 401
    hashed = CountingHasher.calls
    for door in DOORS:
        assert_too_many(door, wrong(door, client, "10.3.3.3"))
    assert CountingHasher.calls == hashed


def test_successful_logins_are_not_counted(counted, client):
    for _ in range(LIMIT * 2):
        assert basic(client, "boss", PASSWORD, "10.4.4.4").status_code == 200
    assert wrong(basic, client, "10.4.4.4").status_code == 401


def test_the_address_count_is_kept_in_the_shared_cache_across_processes(counted, client):
    """A second worker process (its own memory) sees the failures the first one counted."""
    for _ in range(LIMIT):
        wrong(basic, client, "10.5.5.5")
    counters.clear()  # what a process that served none of them knows
    hashed = CountingHasher.calls
    assert_too_many(basic, wrong(basic, client, "10.5.5.5"))
    assert CountingHasher.calls == hashed


def test_the_per_username_lockout_still_applies_below_the_address_rate(settings, counted, client):
    settings.KERASUI_FAILED_LOGIN_RATE = "100/day"
    for attempt in range(10):
        basic(client, "boss", f"guess-{attempt}", "10.6.6.6")
    response = basic(client, "boss", PASSWORD, "10.6.6.6")
    assert response.status_code == 429 and "for this username" in response.json()["detail"]


def test_the_default_rate(settings):
    assert settings.KERASUI_FAILED_LOGIN_RATE == "20/min"
