"""The bucket storage of kept files (AWS_STORAGE_BUCKET_NAME): django-storages' S3 backend, private.

A file's URL is the media view's (`/media/<name>`), never the bucket's: every file is served after the
view's permission check, streamed from the bucket (management/files.py).
"""

from urllib.parse import urljoin

from django.conf import settings
from django.utils.encoding import filepath_to_uri
from storages.backends.s3 import S3Storage


class BucketStorage(S3Storage):
    """S3Storage whose URLs point at the media view, and whose names are kept as given.

    Every name is the server's own (unique per image, model or export), and a job's log is sent again
    whole while the job runs: the same name must replace the object, whatever AWS_S3_FILE_OVERWRITE says.
    """

    def get_default_settings(self):
        return {**super().get_default_settings(), "file_overwrite": True}

    def url(self, name, parameters=None, expire=None, http_method=None):
        return urljoin(settings.MEDIA_URL, filepath_to_uri(name))
