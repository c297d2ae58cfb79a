"""Request body parsers: an unreadable body is a 400 naming the problem, never a 500, and a refused
one is answered without the traceback Django logs for a suspicious request."""

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def refused(error: Exception) -> APIException:
    if isinstance(error, RequestDataTooBig):
        return BodyTooLarge(f"the form fields are too large: {error} (KERASUI_MAX_REQUEST_BYTES)")
    return ParseError(f"form parse error - {error}")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; JSON nested deeper than the decoder can follow is refused like any bad JSON."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the JSON is nested too deeply (arrays or objects within each other)")


class FormParser(parsers.FormParser):
    """DRF's form parser; too many fields is a 400 naming the limit."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except (TooManyFieldsSent, RequestDataTooBig) as error:
            raise refused(error) from None


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser; too many fields or files is a 400 naming the limit."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except (TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig) as error:
            raise refused(error) from None
