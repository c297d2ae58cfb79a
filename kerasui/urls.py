"""Routes: the admin (the UI), the REST API, OAuth2 tokens, and private media."""

from django.contrib import admin
from django.urls import include, path

from api.views import MetricsView
from management import views

admin.site.site_header = "KerasUI"
admin.site.site_title = "KerasUI"
admin.site.index_title = "Datasets, training and models"

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("media/<path:path>", views.protected_media, name="media"),
    # Prometheus' usual path; staff only (see the README's "Metrics").
    path("metrics", MetricsView.as_view(), name="metrics"),
]

# Under /api/ and /o/ Django's own error pages become JSON; elsewhere they stay HTML.
handler400 = "api.views.bad_request"
handler403 = "api.views.permission_denied"
handler404 = "api.views.not_found"
handler500 = "api.views.server_error"
