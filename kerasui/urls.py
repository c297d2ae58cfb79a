"""Routes: the admin (the UI), the REST API, OAuth2 tokens, and private media."""

from django.contrib import admin
from django.urls import include, path

from api.views import MediaView
from management import views

admin.site.site_header = "KerasUI"
admin.site.site_title = "KerasUI"
admin.site.index_title = "Datasets, training and models"

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    # Private media: the session, or the API's credentials (a bearer token with `read`, Basic).
    path("media/<path:path>", MediaView.as_view(), name="media"),
]

# Under /api/ and /o/ Django's own error pages become JSON; elsewhere they stay HTML.
handler400 = "api.views.bad_request"
handler403 = "api.views.permission_denied"
handler404 = "api.views.not_found"
handler500 = "api.views.server_error"
