"""Private media as HTTP responses: streamed by Django, or handed to the front web server.

With `KERASUI_MEDIA_SERVER=nginx` the response only carries `X-Accel-Redirect` (to an `internal`
location, `KERASUI_MEDIA_ACCEL_PREFIX`), with `apache` (or lighttpd) `X-Sendfile` with the file's
path: the web server sends the bytes after Django has checked who may see them.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse


def media_response(relative: str, *, filename: str | None = None, content_type: str | None = None):
    """A response for the media file `relative` (a path under MEDIA_ROOT already checked by the caller)."""
    path = Path(settings.MEDIA_ROOT) / relative
    if not relative or not path.is_file():
        raise Http404("the file is missing")
    content_type = content_type or mimetypes.guess_type(filename or path.name)[0] or "application/octet-stream"
    server = settings.KERASUI_MEDIA_SERVER
    if server in {"nginx", "apache"}:
        response = HttpResponse(content_type=content_type)
        if server == "nginx":
            response["X-Accel-Redirect"] = settings.KERASUI_MEDIA_ACCEL_PREFIX.rstrip("/") + "/" + quote(relative)
        else:
            response["X-Sendfile"] = str(path.resolve())
        if filename:
            response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        return response
    if filename:
        return FileResponse(path.open("rb"), as_attachment=True, filename=filename, content_type=content_type)
    return FileResponse(path.open("rb"), content_type=content_type)
