"""OAuth2 bearer tokens, from the Authorization header only, with client-credentials tokens acting as
their application's user."""

from drf_spectacular.contrib.django_oauth_toolkit import DjangoOAuthToolkitScheme
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as BaseOAuth2Authentication
from oauth2_provider.oauth2_backends import get_oauthlib_core
from rest_framework.authentication import get_authorization_header
from rest_framework.exceptions import AuthenticationFailed


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


class OAuth2Scheme(DjangoOAuthToolkitScheme):
    """The OpenAPI description of these tokens: password and client-credentials flows, per-route scopes."""

    target_class = OAuth2Authentication
