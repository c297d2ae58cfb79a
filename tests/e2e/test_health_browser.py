"""Dataset → Health in Chromium under the CSP: start a check from the dataset page, watch its progress
come in through health.js, see the findings when it ends, and relabel a suspect in one click."""

from pathlib import Path

import pytest

from datasets.models import DataSetItem
from health.models import HealthCheck
from jobs import lifecycle
from tests.e2e.test_browser import screenshots, shoot  # noqa: F401 - fixture

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


def test_a_check_started_in_the_browser_shows_its_progress_then_its_findings(
    live_server,
    admin_user,
    colour_dataset,
    monkeypatch,
    screenshots,  # noqa: F811
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    suspect = DataSetItem.objects.filter(dataset=colour_dataset, label="blue").first()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.set_default_timeout(30_000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", admin_user.username)
        page.fill("#id_password", "password")
        page.click("input[type=submit]")
        page.goto(f"{live_server.url}/admin/management/dataset/{colour_dataset.pk}/change/")
        page.click("#health-button")
        page.click("#kerasui-health-start")
        page.wait_for_selector("#kerasui-health-progress")
        check = HealthCheck.objects.get(dataset=colour_dataset)

        # The job, as its process would write it: a phase and progress, then the report.
        lifecycle.job_claim(kind="health", job_id=check.pk, worker="test:1")
        lifecycle.job_progress(kind="health", job_id=check.pk, phase="features", progress=0.4)
        sync_api.expect(page.locator("#kerasui-health-phase")).to_have_text("computing what each image looks like")
        assert page.eval_on_selector("#kerasui-health-progress", "bar => bar.value") == pytest.approx(0.4)
        issue = {"item": suspect.pk, "given": "blue", "suggested": "red", "confidence": 0.97, "quality": 0.01}
        report = {
            "images": 30, "labels": ["blue", "green", "red"], "method": "test", "folds": 5, "label_issues": [issue],
            "label_quality": {}, "duplicates": [], "leaks": {"run": None, "groups": []}, "outliers": [],
            "balance": {"counts": {"blue": 10, "green": 10, "red": 10}, "smallest": [], "imbalance_ratio": 1.0,
                        "notes": []},
            "unreadable": [], "seconds": {"total": 1.0},
        }  # fmt: skip
        lifecycle.job_succeed(kind="health", job_id=check.pk, report=report)
        page.wait_for_selector("text=Suspected label errors (1)")
        # Without a current model the leak check did not run: the page says so, not "0 … None found".
        assert page.inner_text("#leaks") == "Duplicates across training and held-out images (not checked)"
        assert "97%" in page.inner_text("#label-issues + p + .kerasui-scroll")
        shoot(page, screenshots, "22-dataset-health")
        page.click("text=Relabel to 'red'")
        page.wait_for_selector("text=Suspected label errors (0)")
        browser.close()
    assert DataSetItem.objects.get(pk=suspect.pk).label == "red"
    assert errors == []
