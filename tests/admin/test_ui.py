"""The server side of the browser UI: dashboard, demo button, label chart, gallery, editor and assets."""

from pathlib import Path

from django.conf import settings

from datasets.models import DataSet


def test_an_empty_installation_offers_creating_a_dataset_or_loading_the_demo(admin_client, db):
    html = admin_client.get("/admin/").content.decode()
    assert "No dataset yet" in html and "Create a dataset" in html
    assert 'action="/admin/management/dataset/demo/"' in html


def test_the_demo_button_creates_the_demo_dataset_and_opens_it(admin_client, db):
    assert admin_client.get("/admin/management/dataset/demo/").status_code == 405  # only by POST
    response = admin_client.post("/admin/management/dataset/demo/")
    dataset = DataSet.objects.get(name="Shapes (demo)")
    assert response.status_code == 302 and response["Location"].endswith(f"/dataset/{dataset.pk}/change/")
    assert dataset.items.count() == 600
    admin_client.post("/admin/management/dataset/demo/")  # a second press changes nothing
    assert DataSet.objects.filter(name="Shapes (demo)").count() == 1


def test_the_dashboard_shows_each_dataset_with_its_images_balance_and_accuracy(admin_client, trained_dataset):
    html = admin_client.get("/admin/").content.decode()
    assert "No dataset yet" not in html
    assert f'href="/admin/management/dataset/{trained_dataset.pk}/change/">Colours</a>' in html
    assert '<div class="kerasui-big">30</div>' in html and '<div class="kerasui-big">100.0%</div>' in html
    assert html.count('<td class="bar">') == 3


def test_the_dataset_page_has_the_label_chart_drop_zone_gallery_and_code_editor(admin_client, colour_dataset):
    html = admin_client.get(f"/admin/management/dataset/{colour_dataset.pk}/change/").content.decode()
    assert html.count('class="kerasui-bar" style="width: 100%"') == 3  # equal labels, equal bars
    assert 'id="kerasui-upload"' in html and "Drop images or a zip here" in html
    assert f'id="kerasui-gallery" data-dataset="{colour_dataset.pk}"' in html
    assert 'data-labels="[&quot;blue&quot;, &quot;green&quot;, &quot;red&quot;]"' in html
    assert "vendor/codemirror/codemirror.js" in html and "The contract of the model code" in html


def test_every_browser_asset_is_served_by_the_app_with_its_licence(admin_client):
    static = Path(settings.BASE_DIR) / "management" / "static" / "management"
    for name in (
        "kerasui.js",
        "dataset.js",
        "kerasui.css",
        "vendor/codemirror/codemirror.js",
        "vendor/codemirror/python.js",
    ):
        assert (static / name).stat().st_size > 1000, name
    assert "MIT License" in (static / "vendor/codemirror/LICENSE").read_text()
    html = admin_client.get("/admin/login/").content.decode()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
