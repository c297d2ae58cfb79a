"""How API clients prove who they are: OAuth2 bearer tokens (from the Authorization header only, with
client-credentials tokens acting as their application's user), Basic authentication, and the OAuth2
password grant at /o/token/. The doors that check a password or a client secret answer 429 before
hashing it while the client's address has too many failed logins, and those that check a password
while django-axes has locked the username out from the address (see kerasui.logins)."""

from drf_spectacular.authentication import BasicScheme as BaseBasicScheme
from drf_spectacular.contrib.django_oauth_toolkit import DjangoOAuthToolkitScheme
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as BaseOAuth2Authentication
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.oauth2_validators import OAuth2Validator as BaseOAuth2Validator
from oauthlib.oauth2.rfc6749.errors import OAuth2Error
from rest_framework import authentication
from rest_framework.authentication import get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled

from kerasui.logins import (
    failed_login_count,
    failed_logins_message,
    failed_logins_wait,
    lockout_message,
    lockout_seconds,
    log_lockout,
)


class OAuth2Authentication(BaseOAuth2Authentication):
    """django-oauth-toolkit's bearer authentication.

    A client-credentials token belongs to no user; it acts as the user its application was
    created for (`createapplication --user`), a service account whose permissions apply. An
    application with no user gets no access.
    """

    def authenticate(self, request):
        result = self._bearer(request)
        if result is None:
            return None
        user, token = result
        if user is None:
            user = token.application.user if token.application_id else None
        if user is None or not user.is_active:
            raise AuthenticationFailed(
                "this token's application has no active user: create the application with --user "
                "(the account whose permissions the service gets)"
            )
        return user, token

    def _bearer(self, request):
        """(user, token) for a valid `Authorization: Bearer` token; None for a request without one.

        oauthlib also takes a token from the query string or a form body (`access_token=`): it is
        given neither, so a token elsewhere than in the header (where it ends up in logs and
        caches) authenticates nothing, and an anonymous request's body is not read here at all.
        """
        scheme = get_authorization_header(request).split(maxsplit=1)
        if not scheme or scheme[0].lower() != b"bearer":
            return None
        core = get_oauthlib_core()
        valid, oauth_request = core.server.verify_request(
            request.build_absolute_uri(request.path), request.method, "", core.extract_headers(request), scopes=[]
        )
        if valid:
            return oauth_request.user, oauth_request.access_token
        request.oauth2_error = getattr(oauth_request, "oauth2_error", {})
        return None


class LockedOut(Throttled):
    """429 with Retry-After: this username is locked out from this address."""

    default_code = "locked_out"

    def __init__(self, request, username: str):
        seconds = lockout_seconds(request, username)
        log_lockout(request, username, seconds, door=f"Basic authentication, {request.path}")
        super().__init__(wait=seconds, detail=lockout_message(seconds))


class TooManyFailedLogins(Throttled):
    """429 with Retry-After: this address has too many failed logins for now."""

    default_code = "too_many_failed_logins"

    def __init__(self, seconds: int):
        super().__init__(wait=seconds, detail=failed_logins_message(seconds))


class BasicAuthentication(authentication.BasicAuthentication):
    """DRF's Basic authentication; 429 instead of 401 for a locked-out username, and before any hash
    for an address with too many failed logins."""

    def authenticate_credentials(self, userid, password, request=None):
        if request is not None and (seconds := failed_logins_wait(request.META)):
            raise TooManyFailedLogins(seconds)
        try:
            return super().authenticate_credentials(userid, password, request)
        except AuthenticationFailed:
            # django-axes marks the request it refused (or that reached the limit) while authenticating.
            if request is not None and getattr(request, "axes_locked_out", False):
                raise LockedOut(request, userid) from None
            raise


class PasswordGrantLockedOut(OAuth2Error):
    """The token endpoint's answer to a locked-out username or address: 429, Retry-After, and why."""

    error = "too_many_failed_logins"
    status_code = 429

    def __init__(self, seconds: int, request, message: str | None = None):
        # oauthlib's error_description is plain ASCII by the RFC.
        message = message or lockout_message(seconds)
        super().__init__(description=message.encode("ascii", "replace").decode(), request=request)
        self.seconds = seconds

    @property
    def headers(self):
        return {"Retry-After": str(self.seconds)}


class OAuth2Validator(BaseOAuth2Validator):
    """django-oauth-toolkit's validator; the password grant answers 429 while the username is locked out,
    and any client or user check before hashing while the address has too many failed logins.

    Its validate_user calls Django's authenticate() with a request it builds from oauthlib's, so
    django-axes counts each failure by username and address as for the admin's login (and the last
    backend counts it against the address); a client secret is checked without authenticate(), so a
    wrong one is counted against the address here.
    """

    def _refuse_when_too_many_failures(self, request) -> None:
        # oauthlib's request carries the Django request's META as its headers.
        if seconds := failed_logins_wait(request.headers):
            raise PasswordGrantLockedOut(seconds, request, failed_logins_message(seconds))

    def authenticate_client(self, request, *args, **kwargs):
        self._refuse_when_too_many_failures(request)
        if super().authenticate_client(request, *args, **kwargs):
            return True
        failed_login_count(request.headers)
        return False

    def build_http_request(self, request):
        http_request = super().build_http_request(request)
        request.kerasui_http_request = http_request
        return http_request

    def validate_user(self, username, password, client, request, *args, **kwargs):
        self._refuse_when_too_many_failures(request)
        if super().validate_user(username, password, client, request, *args, **kwargs):
            return True
        http_request = getattr(request, "kerasui_http_request", None)
        if http_request is not None and getattr(http_request, "axes_locked_out", False):
            seconds = lockout_seconds(http_request, username)
            log_lockout(http_request, username, seconds, door="OAuth2 password grant, /o/token/")
            raise PasswordGrantLockedOut(seconds, request)
        return False


class BasicScheme(BaseBasicScheme):
    """The OpenAPI description of Basic authentication, for the subclass above."""

    target_class = BasicAuthentication


class OAuth2Scheme(DjangoOAuthToolkitScheme):
    """The OpenAPI description of these tokens: password and client-credentials flows, per-route scopes."""

    target_class = OAuth2Authentication
