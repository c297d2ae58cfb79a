"""The run page as a report, the home page, the API's pages and dark mode, in a real headless Chromium.

Runs are written straight into the database (no training): a succeeded run with twelve epochs, a
cancelled one planned for thirty, a failed and a queued one. One Chromium serves the whole module; every
page is also saved as a screenshot, light and dark, at both sizes (KERASUI_SCREENSHOTS).
"""

import math
import os
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from datasets.models import DataSet
from ml.evaluate import classification_report
from training.models import TrainingRun
from training.services import training_run_create

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")

KERAS_SUMMARY = """Model: "sequential"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ conv2d (Conv2D)                 │ (None, 14, 14, 16)     │           448 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense (Dense)                   │ (None, 3)              │            51 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 499 (1.95 KB)"""


@pytest.fixture(scope="module")
def chromium():
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the tests stay synchronous.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            yield browser
            browser.close()


@pytest.fixture
def page(chromium, live_server, admin_user):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: message.type == "error" and errors.append(message.text))
    opened.set_default_timeout(30_000)
    opened.goto(f"{live_server.url}/admin/login/")
    opened.fill("#id_username", admin_user.username)
    opened.fill("#id_password", "password")
    opened.click("input[type=submit]")
    opened.wait_for_selector("#kerasui-dashboard")
    yield opened
    context.close()
    assert not errors, errors


def shoot(page, name: str) -> None:
    from tests.e2e.test_browser import shoot as shoot_both_schemes

    folder = Path(os.environ.get("KERASUI_SCREENSHOTS", "/tmp/kerasui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    shoot_both_schemes(page, folder, name)


def _history(epochs: int, best: int) -> list[dict]:
    rows = []
    for epoch in range(1, epochs + 1):
        distance = abs(epoch - best)
        rows.append(
            {
                "epoch": epoch,
                "accuracy": round(min(0.99, 0.4 + 0.05 * epoch), 6),
                "loss": round(1.1 / epoch**0.5, 6),
                "val_accuracy": round(0.944444 - 0.02 * distance, 6),
                "val_loss": round(0.159792 + 0.031 * distance, 6),
                "learning_rate": 0.001,
                "seconds": round(0.6 + 0.01 * epoch, 3),
            }
        )
    return rows


def _run(dataset: DataSet, **fields) -> TrainingRun:
    run = training_run_create(dataset=dataset, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(**fields)
    return TrainingRun.objects.get(pk=run.pk)


def _log(name: str, lines: list[str]) -> str:
    path = Path(settings.MEDIA_ROOT) / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return f"logs/{name}"


@pytest.fixture
def succeeded_run(colour_dataset) -> TrainingRun:
    """Twelve epochs, the ninth the best, evaluated on 18 validation images, with a model and a log."""
    items = list(colour_dataset.items.order_by("id")[:18])
    labels = ["blue", "green", "red"]
    true = np.array([labels.index(item.label) for item in items])
    probabilities = np.eye(3)[true] * 0.8 + 0.1
    probabilities[0] = [0.1, 0.1, 0.8] if true[0] != 2 else [0.8, 0.1, 0.1]
    report = classification_report(true, probabilities, label_names=labels, item_ids=[item.pk for item in items])
    model = Path(settings.MEDIA_ROOT) / "models" / "run_report.keras"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"not a real model: the page only links it")
    started = timezone.now() - timedelta(minutes=5)
    epoch_lines = [
        f"3/3 ━━━━━━━━━━━━━━━━━━━━ 0s 19ms/step - accuracy: 0.8333 - loss: 0.3{n} - val_accuracy: 0.9444 - "
        f"val_loss: 0.1{n}"
        for n in range(40)
    ]
    return _run(
        colour_dataset,
        status="succeeded",
        progress=1.0,
        epoch=12,
        epochs=12,
        labels=labels,
        history=_history(12, best=9),
        metrics={
            "accuracy": 0.833333,
            "loss": 0.363847,
            "val_accuracy": report["accuracy"],
            "val_loss": 0.159792,
            "train_count": 18,
            "validation_count": 18,
            "test_count": 0,
            "epochs_completed": 12,
            "best_epoch": 9,
            "stopped_early": False,
        },
        evaluation={"validation": report},
        model_file="models/run_report.keras",
        log_file=_log("run_report.log", [KERAS_SUMMARY, *epoch_lines]),
        started_at=started,
        finished_at=started + timedelta(seconds=100),
    )


def _texts(page, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(selector).all_text_contents()]


def test_the_run_page_reads_as_a_report_with_a_headline_readable_charts_and_metrics_in_words(
    page, live_server, succeeded_run
):
    page.goto(f"{live_server.url}/admin/management/trainingrun/{succeeded_run.pk}/change/")
    page.wait_for_selector("#kerasui-run [data-chart=loss] svg")

    # The headline: status, the best epoch, the held-out accuracy in percent, the duration.
    headline = page.inner_text("#kerasui-run h2 + *")
    accuracy = f"{succeeded_run.evaluation['validation']['accuracy']:.1%}"
    assert "Succeeded" in headline and re.search(r"best epoch\s+9\s+of 12", headline, re.IGNORECASE), headline
    assert accuracy in headline and "1 min 40 s" in headline, headline

    # Every epoch is on the x axis, the value axis steps by a round number, the best epoch is marked.
    for chart in ("loss", "accuracy"):
        assert _texts(page, f"[data-chart={chart}] .x-axis text") == [str(epoch) for epoch in range(1, 13)]
        assert page.get_attribute(f"[data-chart={chart}] .best-marker", "data-best-epoch") == "9"
    ticks = [float(text.rstrip("%")) for text in _texts(page, "[data-chart=loss] .y-axis text")]
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1, ticks
    step = steps.pop()
    assert round(step / 10 ** math.floor(math.log10(step)), 6) in {1, 2, 5}, ticks

    # Hovering an epoch shows both values: in its title and in the line under the chart.
    band = page.locator("[data-chart=accuracy] rect.hover[data-epoch='3']")
    title = band.locator("title").text_content()
    assert title.startswith("Epoch 3:") and "training 55.0%" in title and "validation" in title, title
    band.hover()
    assert page.inner_text("[data-chart=accuracy] .kerasui-readout").startswith("Epoch 3:")
    page.mouse.move(0, 0)

    # Final metrics in words and percentages; the history folded away.
    metrics = page.inner_text(".field-metrics_display")
    assert "Accuracy on the validation images" in metrics and accuracy in metrics, metrics
    assert "val_accuracy" not in metrics and "False" not in metrics and not re.search(r"\d\.\d{6}", metrics)
    assert page.locator(".field-history_display details:not([open])").count() == 1
    assert not page.is_visible(".field-history_display table")
    page.click(".field-history_display summary")
    assert "validation accuracy" in page.inner_text(".field-history_display thead").lower()

    # On a phone: the log keeps Keras' boxes and scrolls in its own box; downloads are all in view.
    page.set_viewport_size({"width": 390, "height": 844})
    log = page.locator("pre.kerasui-log")
    assert log.evaluate("node => getComputedStyle(node).whiteSpace") == "pre"
    assert log.evaluate("node => node.scrollWidth > node.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for link in page.locator(".kerasui-downloads a").all():
        box = link.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (link.inner_text(), box)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.wait_for_timeout(200)  # the charts are drawn again at the new width

    # In dark mode the curves stand out from the chart's background (4.5:1, they are thin lines).
    page.emulate_media(color_scheme="dark")
    for line in ("train", "validation"):
        assert _contrast(page, f"[data-chart=loss] polyline.{line}", "stroke") >= 4.5, line
    page.emulate_media(color_scheme="light")
    shoot(page, "14-run-report")


def test_cancelled_failed_and_queued_runs_show_one_progress_display_and_their_real_state(
    page, live_server, colour_dataset
):
    cancelled = _run(
        colour_dataset,
        status="cancelled",
        phase="training",
        progress=0.14,
        epoch=5,
        epochs=30,
        history=_history(4, best=4),
        started_at=timezone.now() - timedelta(seconds=30),
        finished_at=timezone.now(),
    )
    page.goto(f"{live_server.url}/admin/management/trainingrun/{cancelled.pk}/change/")
    page.wait_for_selector("#kerasui-run [data-chart=loss] svg circle")
    content = page.inner_text("#content-main")
    assert page.locator("#content-main .kerasui-progress").count() <= 1
    assert "Cancelled" in page.inner_text("#kerasui-run .kerasui-headline")
    assert "4 of 30 epochs completed" in page.inner_text("#kerasui-run .kerasui-headline")
    assert "training" not in page.inner_text("#kerasui-run .kerasui-fact-status").replace("epochs", "")
    assert "Phase" not in content
    # The epochs are said once, in the headline: no second "Epoch: 5 / 30" that contradicts its "4 of 30".
    assert "5 / 30" not in content and page.locator(".field-epoch_display").count() == 0
    # Thirty planned epochs: a tick for each, labels every fifth (evenly spaced, all visible).
    labels = [int(text) for text in _texts(page, "[data-chart=loss] .x-axis text")]
    assert labels == list(range(5, 31, 5)) and page.locator("[data-chart=loss] .x-axis line").count() == 30
    shoot(page, "15-run-cancelled")

    failed = _run(
        colour_dataset,
        status="failed",
        error="The model code raised ValueError: Input 0 of layer dense is incompatible (line 7)",
        started_at=timezone.now() - timedelta(seconds=3),
        finished_at=timezone.now(),
    )
    page.goto(f"{live_server.url}/admin/management/trainingrun/{failed.pk}/change/")
    headline = page.inner_text("#kerasui-run .kerasui-headline")
    assert "Failed" in headline and "no epoch completed" in headline, headline
    assert "incompatible (line 7)" in page.inner_text("#content-main")
    assert page.locator("#content-main .kerasui-progress").count() == 0
    shoot(page, "16-run-failed")

    other = DataSet.objects.create(name="Shapes")
    queued = _run(other)
    page.goto(f"{live_server.url}/admin/management/trainingrun/{queued.pk}/change/")
    page.wait_for_selector("#kerasui-run .kerasui-headline .kerasui-progress")
    headline = page.inner_text("#kerasui-run .kerasui-headline")
    assert "Queued" in headline and "waiting for the training process" in headline, headline
    assert page.locator("#content-main .kerasui-progress").count() == 1
    shoot(page, "17-run-queued")


def _contrast(page, selector: str, colour_property: str) -> float:
    """WCAG contrast between an element's colour and the first opaque background behind it."""
    return page.locator(selector).first.evaluate(
        """(node, property) => {
            const rgb = (text) => text.match(/[\\d.]+/g).slice(0, 4).map(Number);
            const luminance = ([r, g, b]) => [r, g, b].map((v) => {
                v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
            }).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
            const colour = rgb(getComputedStyle(node)[property]);
            let behind = property === "backgroundColor" ? node.parentElement : node, background = null;
            while (behind) {
                const value = rgb(getComputedStyle(behind).backgroundColor);
                if (value.length < 4 || value[3] > 0.9) { background = value; break; }
                behind = behind.parentElement;
            }
            const [a, b] = [luminance(colour), luminance(background || [255, 255, 255])].sort((x, y) => y - x);
            return (a + 0.05) / (b + 0.05);
        }""",
        colour_property,
    )


def test_the_home_page_uses_the_width_and_links_api_pages_that_carry_the_product_name_in_light_and_dark(
    page, live_server, succeeded_run
):
    DataSet.objects.create(name="Shapes")
    page.goto(f"{live_server.url}/admin/")
    datasets = page.locator("#kerasui-dashboard").bounding_box()
    assert datasets["width"] >= 0.6 * 1400, datasets
    assert page.locator("#kerasui-dashboard .kerasui-dataset-card").count() == 2
    cards = [card.bounding_box() for card in page.locator("#kerasui-dashboard .kerasui-dataset-card").all()]
    assert cards[0]["y"] == cards[1]["y"]  # side by side in a grid
    recent = page.locator("#kerasui-recent-runs")
    box = recent.bounding_box()
    assert box["x"] >= datasets["x"] + datasets["width"] - 1 and box["y"] < datasets["y"] + datasets["height"]
    assert recent.locator(f"a[href$='/trainingrun/{succeeded_run.pk}/change/']").count() == 1
    assert page.locator("#header a[href='/api/docs/']").count() == 1
    page.emulate_media(color_scheme="dark")  # the label bars stand out from the card in dark mode
    assert _contrast(page, "#kerasui-dashboard .kerasui-bar", "backgroundColor") >= 3
    page.emulate_media(color_scheme="light")
    shoot(page, "18-home-wide")
    page.goto(f"{live_server.url}/")
    assert page.locator("a[href='/api/docs/']").count() == 1

    # The browsable API and the API docs carry the product's name and follow dark mode.
    page.goto(f"{live_server.url}/api/")
    text = page.inner_text("body")
    assert "KerasUI API" in page.title() and "KerasUI API" in text
    assert "Django REST framework" not in text + page.title() and "DefaultRouter" not in text
    assert page.locator("a[href='/api/docs/']").count() >= 1
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert light != dark and _contrast(page, "body", "color") >= 7
    page.emulate_media(color_scheme="light")
    shoot(page, "19-api-root")

    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "KerasUI API" in page.title() and "KerasUI API" in page.inner_text(".swagger-ui .info .title")
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert light != dark and sum(map(float, re.findall(r"[\d.]+", dark)[:3])) < 3 * 60, dark
    # swagger-theme.js switches Swagger UI's own dark theme on from the media query's change event, which
    # the browser delivers after emulate_media returns: measured once it has arrived.
    page.wait_for_selector("html.dark-mode", state="attached")
    assert _contrast(page, ".swagger-ui .info .title", "color") >= 7
    page.emulate_media(color_scheme="light")
    shoot(page, "20-api-docs")
