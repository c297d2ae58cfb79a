"""Refuse a request whose body is over KERASUI_MAX_UPLOAD_BYTES before anything reads it, give every
answer a Content-Security-Policy, and keep the API's answers out of every cache."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse


class RequestSizeLimitMiddleware:
    """413 for a declared body above the limit: uploads are streamed to disk, so without this a
    client could fill the server's temporary folder with one request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.KERASUI_MAX_UPLOAD_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        setting = "KERASUI_MAX_UPLOAD_BYTES"
        if length <= limit and not request.content_type.startswith("multipart/"):
            # A body that is not a multipart upload is read into memory whole: Django refuses it above
            # this limit when a view reads it, with a logged traceback. Refused here first, as a 413.
            limit, setting = settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "KERASUI_MAX_REQUEST_BYTES"
        if limit is not None and length > limit:
            message = f"the request body is {length} bytes; at most {limit} are accepted ({setting})"
            if request.path.startswith(("/api/", "/o/")):
                return JsonResponse({"detail": message, "setting": setting, "limit": limit}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """`KERASUI_CONTENT_SECURITY_POLICY` on every answer that has no policy of its own (private media
    sets a stricter sandbox). The pages run scripts only from this site's own files: no inline script,
    no inline event handler, so an injected `<script>` or `onclick=` never runs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.KERASUI_CONTENT_SECURITY_POLICY
        if policy:
            response.headers.setdefault("Content-Security-Policy", policy)
        return response


class PrivateApiMiddleware:
    """`Cache-Control: private, no-store` on every answer under /api/ and /o/ that sets no policy of its
    own: they carry a user's data (reports, items, users, predictions, tokens), which neither a shared
    proxy nor the browser's disk should keep."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(("/api/", "/o/")):
            response.headers.setdefault("Cache-Control", "private, no-store")
        return response
