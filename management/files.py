"""Private media as HTTP responses: streamed by Django, or handed to the front web server.

With `KERASUI_MEDIA_SERVER=nginx` the response only carries `X-Accel-Redirect` (to an `internal`
location, `KERASUI_MEDIA_ACCEL_PREFIX`), with `apache` (or lighttpd) `X-Sendfile` with the file's
path: the web server sends the bytes after Django has checked who may see them. Files are read through
Django's storage API: with a bucket (AWS_STORAGE_BUCKET_NAME) Django streams them from it after the same
check, rather than redirecting to a presigned URL that would outlive the check and skip these headers.

Whoever sends the bytes, the type is decided here from what the file is, never guessed from an
extension by the platform: an item image (named by the server from its detected format) inline as
that image type, a log as plain text, and everything else as an `application/octet-stream`
attachment. Every answer forbids sniffing, runs nothing (a CSP sandbox) and is not cached.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpResponse

from ml.files import atomic_write_bytes

# The image types a dataset item is served inline as, by its (server-chosen) extension.
IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "ico": "image/x-icon",
    "avif": "image/avif",
}
TEXT = "text/plain; charset=utf-8"
DOWNLOAD = "application/octet-stream"
# Downloads (models, exports, weights) keep a precise type only from this list.
DOWNLOAD_TYPES = {"zip": "application/zip"}
# On every private file: the type as sent is the type (no sniffing), nothing in it runs, even when
# it is opened as a page (sandbox), and neither the browser nor a proxy keeps a copy.
PRIVATE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, no-store",
}


def media_type(relative: str) -> tuple[str, bool]:
    """The content type of the media file `relative`, and whether it may be shown inline."""
    path = PurePosixPath(relative)
    folder = path.parts[0] if path.parts else ""
    extension = path.suffix.lower().lstrip(".")
    if folder == "datasets" and extension in IMAGE_TYPES:
        return IMAGE_TYPES[extension], True
    if folder == "explanations" and extension == "png":  # heatmaps the server drew (serving/explanations.py)
        return IMAGE_TYPES["png"], True
    if folder == "logs" and extension in {"log", "txt"}:
        return TEXT, True
    return DOWNLOAD_TYPES.get(extension, DOWNLOAD), False


def media_write_bytes(*, name: str, data: bytes) -> None:
    """Keep `data` as the media file `name`, replacing it whole, through the storage API: a reader never
    sees half a file (on this disk a temporary file renamed; in a bucket one PUT)."""
    if _on_this_disk():
        atomic_write_bytes(Path(default_storage.path(name)), data)
    else:
        default_storage.save(name, ContentFile(data))


def media_create(*, storage, name: str, data: bytes) -> str:
    """Keep `data` as a new file `name` of `storage`, a name the server has just made unique (a random
    part): the name kept. On this disk the file is created exclusively (O_EXCL) without first asking
    whether the name is free (`Storage.save` asks twice per file); a file of that name, were there one,
    is never replaced: `Storage.save` then picks another name, as it also does when the folder does not
    exist yet (it makes it). A file half written (a full disk) is deleted before the error goes on. In a
    bucket: `Storage.save`, one PUT (names are kept as given, kerasui/storage.py)."""
    if storage.__class__ is not FileSystemStorage:
        return storage.save(name, ContentFile(data))
    path = storage.path(name)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except (FileExistsError, FileNotFoundError):
        return storage.save(name, ContentFile(data))
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        if storage.file_permissions_mode is not None:
            os.chmod(path, storage.file_permissions_mode)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return name


def media_local_copy(*, name: str) -> Path:
    """A path on this machine to the media file `name`, for code that reads files by path (model
    engines): the file itself on this disk; from a bucket, a copy in this machine's cache
    (KERASUI_CACHE_DIR/media), fetched when missing or of another size, written whole then renamed."""
    if _on_this_disk():
        return Path(default_storage.path(name))
    copy = Path(settings.KERASUI_CACHE_DIR) / "media" / PurePosixPath(name)
    size = default_storage.size(name)
    if copy.is_file() and copy.stat().st_size == size:
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    temporary = copy.with_name(f".{copy.name}.{uuid.uuid4().hex}.part")
    try:
        with default_storage.open(name, "rb") as source, temporary.open("wb") as target:
            shutil.copyfileobj(source, target, length=1024 * 1024)
        temporary.replace(copy)
    finally:
        temporary.unlink(missing_ok=True)
    return copy


def media_scratch_path(*, name: str) -> Path:
    """Where this machine writes the media file `name` before it is kept (`media_keep_file`): the file
    itself on this disk; with a bucket, its copy in this machine's cache (where `media_local_copy`
    looks first), so the writing machine reads it back without a download."""
    if _on_this_disk():
        path = Path(default_storage.path(name))
    else:
        path = Path(settings.KERASUI_CACHE_DIR) / "media" / PurePosixPath(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def media_keep_file(*, name: str, path: Path) -> None:
    """Keep the local file `path` as the media file `name`, replacing it whole: on this disk it is
    renamed into place (unless it is there already); into a bucket it is uploaded (one PUT) and
    stays as this machine's cached copy."""
    if _on_this_disk():
        target = Path(default_storage.path(name))
        if path.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        return
    with path.open("rb") as file:
        default_storage.save(name, File(file))
    copy = Path(settings.KERASUI_CACHE_DIR) / "media" / PurePosixPath(name)
    if path.resolve() != copy.resolve():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)


def media_folder_fetch(*, name: str) -> Path:
    """The media folder `name` on this machine, to read and write by path (a training run's checkpoints):
    the folder itself on this disk; with a bucket, a folder of this machine's cache made to hold exactly
    what the bucket holds under `name` (what another machine wrote last wins over what this one kept)."""
    folder = media_scratch_path(name=name)
    if _on_this_disk():
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _, files = default_storage.listdir(name)
    except FileNotFoundError:
        files = []
    for file in files:
        media_local_copy(name=f"{name}/{file}")
    return folder


def media_folder_keep(*, name: str, folder: Path) -> None:
    """With a bucket, make the media folder `name` hold the files of `folder` (a checkpoint just
    written): each uploaded, and the ones `folder` no longer has deleted. Nothing to do on this disk."""
    if _on_this_disk():
        return
    local = {path.name: path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")}
    for file, path in sorted(local.items()):
        with path.open("rb") as content:
            default_storage.save(f"{name}/{file}", File(content))
    try:
        _, stored = default_storage.listdir(name)
    except FileNotFoundError:
        stored = []
    for file in stored:
        if file not in local:
            default_storage.delete(f"{name}/{file}")


def media_is_local() -> bool:
    """Whether media storage is this machine's disk (the default) rather than a bucket."""
    return _on_this_disk()


def _on_this_disk() -> bool:
    try:
        default_storage.path("")
    except NotImplementedError:  # a bucket
        return False
    return True


def media_response(relative: str, *, filename: str | None = None):
    """A response for the media file `relative` (a name in media storage already checked by the caller).

    `filename` makes it a download under that name; a file that may not be shown inline is a
    download under its own name anyway.
    """
    if not relative or not default_storage.exists(relative):
        raise Http404("the file is missing")
    content_type, inline = media_type(relative)
    if filename is None and not inline:
        filename = PurePosixPath(relative).name
    # The front web server can send only files on this machine's disk; a bucket's are streamed by Django.
    server = settings.KERASUI_MEDIA_SERVER if _on_this_disk() else ""
    if server in {"nginx", "apache"}:
        response = HttpResponse(content_type=content_type)
        if server == "nginx":
            response["X-Accel-Redirect"] = settings.KERASUI_MEDIA_ACCEL_PREFIX.rstrip("/") + "/" + quote(relative)
        else:
            response["X-Sendfile"] = str(Path(default_storage.path(relative)).resolve())
        if filename:
            response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    elif filename:
        response = FileResponse(
            default_storage.open(relative, "rb"), as_attachment=True, filename=filename, content_type=content_type
        )
    else:
        response = FileResponse(default_storage.open(relative, "rb"), content_type=content_type)
    for header, value in PRIVATE_HEADERS.items():
        response[header] = value
    return response
