"""Password guessing on every door that checks a password: the admin's login, the OAuth2 password grant,
Basic authentication. After 10 failures for one username from one address, that pair is refused
(429, even with the right password) for 15 minutes or until an administrator unlocks it."""

import base64
import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import call_command
from oauth2_provider.models import get_application_model

Application = get_application_model()
PASSWORD = "the-right-pass-phrase-7"


@pytest.fixture
def boss(db):
    user = User.objects.create_superuser("boss", password=PASSWORD)
    Application.objects.create(
        name="script",
        client_id="script-id",
        client_secret="script-secret",
        user=user,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD,
    )
    return user


def token_request(client, password: str, address: str = "127.0.0.1", username: str = "boss"):
    data = {
        "grant_type": "password",
        "username": username,
        "password": password,
        "client_id": "script-id",
        "client_secret": "script-secret",
    }
    return client.post("/o/token/", data, REMOTE_ADDR=address)


def admin_login(client, password: str, address: str = "127.0.0.1", username: str = "boss"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address)


def basic_request(client, password: str, address: str = "127.0.0.1", username: str = "boss"):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return client.get("/api/dataset/", HTTP_AUTHORIZATION=f"Basic {credentials}", REMOTE_ADDR=address)


def assert_locked_json(response):
    assert response.status_code == 429, response.content[:300]
    assert int(response["Retry-After"]) > 14 * 60
    body = response.json()
    message = body.get("detail") or body.get("error_description")
    assert "Too many failed logins" in message, body


def test_the_password_grant_refuses_a_username_after_ten_failures_even_with_the_right_password(boss, client, caplog):
    for attempt in range(9):
        wrong = token_request(client, f"guess-{attempt}")
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    with caplog.at_level(logging.WARNING, logger="kerasui.security"):
        tenth = token_request(client, "guess-9")
        eleventh = token_request(client, "guess-10")
        right = token_request(client, PASSWORD)
    for response in (tenth, eleventh, right):
        assert_locked_json(response)
        assert response.json()["error"] == "too_many_failed_logins"
    assert "access_token" not in right.json()
    assert any("locked out" in record.getMessage() and "boss" in record.getMessage() for record in caplog.records)

    # Another address, and another username from this address, are not locked.
    assert token_request(client, PASSWORD, address="10.0.0.2").status_code == 200
    assert token_request(client, "nope", username="someone-else").status_code == 400

    call_command("axes_reset_username", "boss")
    assert token_request(client, PASSWORD).status_code == 200


def test_basic_authentication_refuses_a_username_after_ten_failures_with_429(boss, client):
    for attempt in range(9):
        assert basic_request(client, f"guess-{attempt}").status_code == 401
    assert_locked_json(basic_request(client, "guess-9"))
    assert_locked_json(basic_request(client, "guess-10"))
    assert_locked_json(basic_request(client, PASSWORD))
    assert basic_request(client, PASSWORD, address="10.0.0.3").status_code == 200

    call_command("axes_reset_ip_username", "127.0.0.1", "boss")
    assert basic_request(client, PASSWORD).status_code == 200


def test_the_admin_login_says_the_username_is_locked_and_an_administrator_unlocks_it(boss, client):
    for attempt in range(9):
        page = admin_login(client, f"guess-{attempt}")
        assert page.status_code == 200 and "Please enter the correct username and password" in page.content.decode()
    for password in ("guess-9", "guess-10", PASSWORD):
        locked = admin_login(client, password)
        assert locked.status_code == 429
        page = locked.content.decode()
        assert "Too many failed logins" in page and 'id="kerasui-locked-out"' in page
        assert int(locked["Retry-After"]) > 14 * 60
    assert "_auth_user_id" not in client.session

    # Another administrator unlocks it in the admin: Access attempts, delete.
    other = User.objects.create_superuser("other", password=PASSWORD)
    admin = type(client)()
    admin.force_login(other)
    [attempt] = AccessAttempt.objects.filter(username="boss")
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "boss" in listing.content.decode()
    deleted = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    logged_in = admin_login(client, PASSWORD)
    assert logged_in.status_code == 302 and logged_in["Location"] == "/admin/"


def test_failures_on_every_door_count_together_and_the_lock_ends_after_fifteen_minutes(boss, client):
    for attempt in range(3):
        token_request(client, f"token-guess-{attempt}")
        admin_login(client, f"admin-guess-{attempt}")
        basic_request(client, f"basic-guess-{attempt}")
    assert basic_request(client, "basic-guess-tenth").status_code == 429
    assert token_request(client, PASSWORD).status_code == 429
    # Fifteen minutes later (the attempts moved back in time instead of waiting).
    last = AccessAttempt.objects.get().attempt_time
    AccessAttempt.objects.update(attempt_time=last - timedelta(minutes=15, seconds=1))
    assert token_request(client, PASSWORD).status_code == 200


def test_the_limit_and_the_lockout_time_are_settings(boss, client, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    assert basic_request(client, "one").status_code == 401
    locked = basic_request(client, "two")
    assert locked.status_code == 429 and 0 < int(locked["Retry-After"]) <= 60
