"""Routes: the admin (the UI), the REST API, OAuth2 tokens, and private media."""

from functools import wraps

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.urls import include, path
from oauth2_provider import urls as oauth2_urls

from api.views import MediaView, MetricsView
from management import views

admin.site.site_header = "KerasUI"
admin.site.site_title = "KerasUI"
admin.site.index_title = "Datasets, training and models"


def superusers_only(view):
    """Anonymous visitors go on to the view (which sends them to log in); other non-superusers get 403."""

    @wraps(view)
    def page(request, *args, **kwargs):
        if request.user.is_authenticated and not request.user.is_superuser:
            raise PermissionDenied("the OAuth application and token pages are for administrators (superusers)")
        return view(request, *args, **kwargs)

    return page


# django-oauth-toolkit's routes: the token endpoints as they are; the pages that register
# applications and list or delete authorized tokens for superusers only.
oauth2_patterns = [
    *oauth2_urls.metadata_urlpatterns,
    *oauth2_urls.base_urlpatterns,
    *[
        path(str(route.pattern), superusers_only(route.callback), name=route.name)
        for route in oauth2_urls.management_urlpatterns
    ],
    *oauth2_urls.oidc_urlpatterns,
    *oauth2_urls.dcr_urlpatterns,
]

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("o/", include((oauth2_patterns, oauth2_urls.app_name), namespace="oauth2_provider")),
    # Private media: the session, or the API's credentials (a bearer token with `read`, Basic).
    path("media/<path:path>", MediaView.as_view(), name="media"),
    # Prometheus' usual path; staff only (see the README's "Metrics").
    path("metrics", MetricsView.as_view(), name="metrics"),
]

# Under /api/ and /o/ Django's own error pages become JSON; elsewhere they stay HTML.
handler400 = "api.views.bad_request"
handler403 = "api.views.permission_denied"
handler404 = "api.views.not_found"
handler500 = "api.views.server_error"
