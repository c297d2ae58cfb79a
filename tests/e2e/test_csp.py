"""Every page carries a Content-Security-Policy that allows scripts only from this site's files, and
every page still works under it in Chromium: the admin's pages, the browsable API, Swagger UI."""

import re
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from datasets.models import DataSet, DataSetItem
from tests.images import png
from training.models import TrainingRun
from training.services import training_run_create

CHROMIUM = Path("/usr/bin/chromium")
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)


@pytest.fixture
def pages(db, admin_user) -> list[str]:
    """A dataset with an image and a queued run: every kind of page, with its buttons."""
    dataset = DataSet.objects.create(name="Shapes", image_size=16)
    item = DataSetItem(dataset=dataset, label="square")
    item.image.save("x.png", ContentFile(png()), save=True)
    run = training_run_create(dataset=dataset, user=admin_user)
    return [
        "/",
        "/admin/",
        "/admin/management/dataset/",
        "/admin/management/dataset/add/",
        f"/admin/management/dataset/{dataset.pk}/change/",
        f"/admin/management/dataset/{dataset.pk}/upload/",
        f"/admin/management/dataset/{dataset.pk}/health/",
        "/admin/management/dataset/test/",
        "/admin/management/datasetitem/",
        f"/admin/management/datasetitem/{item.pk}/change/",
        f"/admin/management/trainingrun/{run.pk}/change/",
        "/api/",
        "/api/dataset/",
        "/api/docs/",
    ]


def policy_of(response) -> dict[str, str]:
    directives = [part.strip().split(None, 1) for part in response["Content-Security-Policy"].split(";")]
    return {parts[0]: parts[1] if len(parts) > 1 else "" for parts in directives if parts}


def test_every_page_has_a_policy_without_inline_scripts_and_no_inline_script_or_handler(admin_client, client, pages):
    for who, url in [*((admin_client, url) for url in pages), (client, "/admin/login/")]:
        response = who.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        policy = policy_of(response)
        assert policy["script-src"] == "'self'", url
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'", url
        assert policy["base-uri"] == "'self'", url
        html = response.content.decode()
        assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html))
        assert not INLINE_HANDLER.search(html), (url, INLINE_HANDLER.search(html))


def test_json_answers_carry_the_policy_too(admin_client, db):
    response = admin_client.get("/api/dataset/", HTTP_ACCEPT="application/json")
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_swagger_ui_start_up_script_is_a_file(client, db):
    page = client.get("/api/docs/")
    assert b"?script=" in page.content
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


# --- in Chromium ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_pages_work_under_the_policy_in_chromium(live_server, admin_user, monkeypatch):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)"
    )
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    dataset = DataSet.objects.create(name="Shapes", image_size=16)
    item = DataSetItem(dataset=dataset, label="square")
    item.image.save("x.png", ContentFile(png()), save=True)
    url = live_server.url
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                message.type == "error" and errors.append(f"{message.text} ({message.location['url']} on {page.url})")
            ),
        )
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{url}/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "password")
            page.click("input[type=submit]")
            page.wait_for_selector("#kerasui-dashboard")

            # The dataset page: the code editor and the gallery are built by scripts; Train submits its form.
            page.goto(f"{url}/admin/management/dataset/{dataset.pk}/change/")
            page.wait_for_selector(".CodeMirror-linenumber")
            page.wait_for_selector("#kerasui-gallery .kerasui-card img")
            assert page.evaluate("document.querySelector('#kerasui-gallery img').naturalWidth") == 16
            page.click("#train-button")
            page.wait_for_selector("#kerasui-run [data-chart=loss] svg")
            run = TrainingRun.objects.get(dataset=dataset)
            # The run page's Cancel run link submits its form too.
            page.click("text=Cancel run")
            page.wait_for_selector(".messagelist .success")
            run.refresh_from_db()
            assert run.status == TrainingRun.Status.CANCELLED

            # Picking a pretrained starting point sets the image size to 224 px (the page's script file).
            page.goto(f"{url}/admin/management/dataset/add/")
            assert page.input_value("input[name=image_size]") == "64"
            page.select_option("select[name=architecture]", "efficientnet_lite0")
            assert page.input_value("input[name=image_size]") == "224"

            # The browsable API and Swagger UI (served by the app, start-up script as a file).
            page.goto(f"{url}/api/dataset/")
            page.wait_for_selector(".response-info")
            page.goto(f"{url}/api/docs/")
            page.wait_for_selector(".swagger-ui .opblock-tag", timeout=60_000)
            page.goto(f"{url}/")
            assert not errors, errors

            # The policy is enforced: an injected inline handler does not run.
            page.goto(f"{url}/admin/")
            page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', '<img src=\"data:,\" onerror=\"window.ran = 1\">')"
            )
            page.wait_for_timeout(300)
            assert page.evaluate("window.ran") is None
            assert any("Content Security Policy" in error for error in errors), errors
        finally:
            browser.close()
