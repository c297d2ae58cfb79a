"""What an attacker sends that is not a password guess: unreadable bodies, tokens outside the header,
the OAuth application pages."""

import base64
import logging
import secrets
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
from rest_framework.test import APIClient

Application = get_application_model()
AccessToken = get_access_token_model()


def bearer_token(user: User, scope: str = "read write predict") -> str:
    application = Application.objects.create(
        name=f"app-{secrets.token_hex(3)}",
        user=user,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD,
    )
    token = AccessToken.objects.create(
        user=user,
        application=application,
        token=secrets.token_urlsafe(24),
        expires=timezone.now() + timedelta(hours=1),
        scope=scope,
    )
    return token.token


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def no_traceback(records) -> bool:
    return not any(record.exc_info or record.levelno >= logging.ERROR for record in records)


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("credentials", ["session", "basic", "bearer"])
def test_json_nested_too_deep_is_a_400_naming_it_for_any_authenticated_request(
    db, admin_user, client, caplog, depth, credentials
):
    admin_user.set_password("a-long-pass-phrase-9")
    admin_user.save()
    headers = {}
    if credentials == "session":
        client.force_login(admin_user)
    elif credentials == "basic":
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(b"admin:a-long-pass-phrase-9").decode()
    else:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {bearer_token(admin_user)}"
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        response = client.post("/api/dataset/", nested(depth), content_type="application/json", **headers)
    assert response.status_code == 400, response.content[:300]
    assert "nested too deeply" in response.json()["detail"]
    assert no_traceback(caplog.records), [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize(
    "authorization, status",
    [
        # No credentials, or a token: refused before the body is read.
        (None, 401),
        ("Bearer not-a-token", 401),
        # A wrong password: django-axes records the failed login with the form fields, so the body is read.
        ("Basic bm9ib2R5Om5vdGhpbmc=", 400),
    ],
)
def test_json_nested_too_deep_from_an_anonymous_client_is_a_4xx_without_a_traceback(
    db, client, caplog, depth, authorization, status
):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        response = client.post("/api/dataset/", nested(depth), content_type="application/json", **headers)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    if status == 400:
        assert "nested too deeply" in response.json()["detail"]
    assert no_traceback(caplog.records), [record.getMessage() for record in caplog.records]


def test_json_nested_too_deep_in_a_prediction_an_item_or_a_validation_is_a_400(db, admin_user):
    from datasets.models import DataSet

    dataset = DataSet.objects.create(name="Deep")
    api = APIClient()
    api.force_authenticate(admin_user)
    for url in ["/api/test/", "/api/datasetitem/", f"/api/dataset/{dataset.pk}/validate/"]:
        response = api.post(url, '{"dataset": ' + nested(5000) + "}", content_type="application/json")
        assert response.status_code == 400 and "nested too deeply" in response.json()["detail"], url


def test_an_access_token_in_a_form_body_or_the_query_string_authenticates_nothing(db, admin_user, client):
    token = bearer_token(admin_user)
    in_body = client.post("/api/dataset/", {"access_token": token, "name": "Smuggled"})
    assert in_body.status_code == 401, in_body.content[:300]
    in_query = client.get(f"/api/dataset/?access_token={token}")
    assert in_query.status_code == 401
    in_header = client.get("/api/dataset/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert in_header.status_code == 200


@pytest.mark.parametrize("url", ["/o/applications/", "/o/applications/register/", "/o/authorized_tokens/"])
def test_the_oauth_application_and_token_pages_are_for_superusers_only(db, admin_user, client, url):
    staff = User.objects.create_user("staff", password="a-long-pass-phrase-9", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    client.force_login(admin_user)
    assert client.get(url).status_code == 200


def test_an_application_page_of_a_staff_user_is_refused_too(db, admin_user, client):
    staff = User.objects.create_user("staff", password="a-long-pass-phrase-9", is_staff=True)
    application = Application.objects.create(
        name="mine",
        user=staff,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD,
    )
    client.force_login(staff)
    for url in [f"/o/applications/{application.pk}/", f"/o/applications/{application.pk}/update/"]:
        assert client.get(url).status_code == 403, url
    assert client.post(f"/o/applications/{application.pk}/delete/").status_code == 403
    assert Application.objects.filter(pk=application.pk).exists()


def test_the_oauth_pages_send_an_anonymous_visitor_to_log_in(db, client):
    response = client.get("/o/applications/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/x-www-form-urlencoded", "a=b&" * 5000),
        ("multipart/form-data; boundary=zz", '--zz\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n' * 2000),
        ("application/json", b"\xff\xfe{"),
    ],
    ids=["form", "multipart", "not-utf8"],
)
def test_a_body_with_too_many_fields_or_bad_bytes_is_a_400_naming_it_without_a_traceback(
    db, admin_user, client, caplog, content_type, body
):
    admin_user.set_password("a-long-pass-phrase-9")
    admin_user.save()
    basic = "Basic " + base64.b64encode(b"admin:a-long-pass-phrase-9").decode()
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        response = client.post("/api/dataset/", body, content_type=content_type, HTTP_AUTHORIZATION=basic)
    assert response.status_code == 400, response.content[:300]
    assert "parse error" in response.json()["detail"]
    assert no_traceback(caplog.records), [record.getMessage() for record in caplog.records]
