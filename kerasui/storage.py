"""The bucket storage of kept files (AWS_STORAGE_BUCKET_NAME): django-storages' S3 backend, private.

A file's URL is the media view's (`/media/<name>`), never the bucket's: every file is served after the
view's permission check, streamed from the bucket (management/files.py).
"""

from urllib.parse import urljoin

from django.conf import settings
from django.utils.encoding import filepath_to_uri
from storages.backends.s3 import S3Storage


class BucketStorage(S3Storage):
    """S3Storage whose URLs point at the media view."""

    def url(self, name, parameters=None, expire=None, http_method=None):
        return urljoin(settings.MEDIA_URL, filepath_to_uri(name))
