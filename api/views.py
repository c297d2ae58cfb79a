"""What every part of the API shares: the error answers (JSON under /api/ and /o/), file downloads, the job
viewset base, accounts, the liveness probe, private media, Prometheus metrics and the API root.

Each domain's endpoints are in its own package (datasets/, training/, serving/, health/, labelling/api.py);
api/urls.py stitches them. Like those, a view validates input, calls one service, presents the result."""

import os
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.http import Http404, HttpResponse, JsonResponse
from django.utils._os import safe_join
from django.views import defaults
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotAcceptable, NotAuthenticated
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.routers import DefaultRouter
from rest_framework.utils.formatting import markup_description
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from api.permissions import (
    CanReadMetrics,
    IsSuperuser,
    TokenScopes,
)
from api.serializers import UserSerializer
from datasets.services import (
    dataset_item_thumbnail_source,
)
from jobs import lifecycle
from management import metrics
from management.errors import Conflict, NotFound, ServiceError
from management.files import media_response
from management.permissions import media_permissions
from serving.prediction import (
    model_cache,
)

API_PREFIXES = ("/api/", "/o/")


def exception_handler(error, context):
    """DRF's handler, plus services' errors as 4xx JSON naming the field at fault."""
    if isinstance(error, ServiceError):
        retry_after = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return Response(error.as_dict(), status=error.status, headers=headers)
    return drf_exception_handler(error, context)


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIXES)


# Django's own error pages, as JSON under /api/ and /o/ (unknown routes, oversize bodies, crashes).
def bad_request(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": f"bad request: {exception or 'the request cannot be read'}"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": str(exception) or "permission denied"}, status=403)
    return defaults.permission_denied(request, exception)


def not_found(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": f"not found: no route or object at {request.path}"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"detail": "server error: the failure is logged for the operator"}, status=500)
    return defaults.server_error(request)


def file_download(field, filename: str | None = None):
    if not field:
        raise NotFound("there is no such file", field="file")
    try:
        return media_response(field.name, filename=filename)
    except Http404:
        raise NotFound("the file is missing from storage", field="file") from None


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """A kind of job through the API: read it (status, phase, progress 0 to 1, error, result) and cancel it."""

    def get_queryset(self):
        # A dataset being deleted takes its jobs with it: they are gone from the lists at once.
        return self.get_serializer_class().Meta.model.objects.filter(dataset__deleting=False).order_by("-id")

    @extend_schema(summary="Cancel it: a queued job never starts; a running one stops and keeps nothing", request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        lifecycle.job_cancel(kind=job.KIND, job_id=job.pk)
        job.refresh_from_db()
        return Response(self.get_serializer(job).data)


class UserViewSet(viewsets.ModelViewSet):
    """Accounts, for administrators (superusers) only."""

    serializer_class = UserSerializer
    permission_classes = [TokenScopes, permissions.IsAuthenticated, IsSuperuser]
    filterset_fields = ["username", "is_active", "is_staff", "is_superuser"]

    def get_queryset(self):
        return get_user_model().objects.prefetch_related("groups").order_by("id")

    def perform_update(self, serializer):
        if serializer.instance == self.request.user:
            data = serializer.validated_data
            if data.get("is_superuser") is False or data.get("is_active") is False:
                raise Conflict("you cannot remove your own administrator rights or deactivate yourself", field="user")
        serializer.save()

    def perform_destroy(self, instance):
        if instance == self.request.user:
            raise Conflict("you cannot delete your own account", field="user")
        instance.delete()


@extend_schema(
    summary="Liveness and readiness",
    responses={
        200: inline_serializer("Health", {"status": serializers.CharField(), "database": serializers.CharField()}),
        503: OpenApiResponse(description="The database cannot be reached."),
    },
)
class HealthView(APIView):
    """Unauthenticated: 200 when the app runs and its database answers, else 503."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = []  # load balancers and monitors probe it often

    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return Response({"status": "unavailable", "database": "unreachable"}, status=503)
        return Response({"status": "ok", "database": "ok"})


class MediaNegotiation(DefaultContentNegotiation):
    """A file answers in its own type whatever the client accepts; only errors are rendered (JSON)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class CanViewMedia(permissions.BasePermission):
    """A media file needs the view permission of what its folder holds: the same rule as the admin's."""

    message = "you may not see this file"

    def has_permission(self, request, view):
        needed = media_permissions(PurePosixPath(view.kwargs.get("path", "")).as_posix())
        return needed is not None and request.user.has_perms(needed)


@extend_schema(exclude=True)
class MediaView(APIView):
    """Private media (the `image` URLs of items, models, logs) for a session, a bearer token with the
    `read` scope or Basic authentication; a browser with none of them is sent to the login page."""

    permission_classes = [TokenScopes, permissions.IsAuthenticated, CanViewMedia]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = MediaNegotiation
    # Not counted against the API's request rate: an admin page shows dozens of thumbnails at once.
    throttle_classes = []

    def get(self, request, path):
        try:
            full_path = Path(safe_join(settings.MEDIA_ROOT, path))
        except SuspiciousFileOperation:  # ../ and absolute names
            raise Http404 from None
        relative = Path(os.path.relpath(full_path, os.path.abspath(settings.MEDIA_ROOT))).as_posix()
        if not default_storage.exists(relative):
            # A thumbnail with no file: its image is its own thumbnail (small, shown as it is), or came
            # before thumbnails did (made now).
            relative = dataset_item_thumbnail_source(name=relative) or relative
        return media_response(relative)

    def handle_exception(self, exc):
        request = self.request
        browser = "text/html" in request.META.get("HTTP_ACCEPT", "")
        if isinstance(exc, NotAuthenticated) and browser and "HTTP_AUTHORIZATION" not in request.META:
            return redirect_to_login(request.get_full_path())
        return super().handle_exception(exc)


@extend_schema(exclude=True)
class MetricsView(APIView):
    """Prometheus metrics of all web workers (text format), for staff or a token with the `metrics` scope."""

    permission_classes = [CanReadMetrics]
    renderer_classes = [JSONRenderer]
    # Text whatever the client accepts (Prometheus asks for OpenMetrics first); an error is JSON.
    content_negotiation_class = MediaNegotiation
    # Counted apart from the API's requests (KERASUI_THROTTLE_METRICS): a scraper sharing an account
    # with a busy API client is not refused for the client's requests.
    throttle_scope = "metrics"

    def get(self, request):
        metrics.record_process(cached_models=len(model_cache))
        body, content_type = metrics.exposition()
        return HttpResponse(body, content_type=content_type)


class ApiRootView(DefaultRouter.APIRootView):
    """Datasets of labelled images, their training runs and predictions: the links below list each resource.

    The API docs (/api/docs/) describe every endpoint and let you try it from the browser. Authenticate
    with an OAuth2 token from /o/token/ (scopes read, write, predict), a session, or Basic authentication.
    """

    name = "KerasUI API"
    # Besides the router's viewsets: the API's other top-level resources, by URL name (api/urls.py). A
    # dataset's and a run's own actions (predict, model, model/metadata, health, export…) are in the docs.
    more = {
        "test": "predict",
        "starting-points": "starting-points",
        "health": "health",
        "schema": "schema",
        "docs": "docs",
    }

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        for key, url_name in self.more.items():
            response.data[key] = reverse(url_name, request=request, format=kwargs.get("format"))
        return response

    def get_view_description(self, html=False):
        # The docstring's paragraphs, each on one line (its line breaks are the source's, not the reader's).
        text = "\n\n".join(" ".join(part.split()) for part in (self.__doc__ or "").split("\n\n"))
        return markup_description(text) if html else text
