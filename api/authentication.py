"""OAuth2 bearer tokens, with client-credentials tokens acting as their application's user."""

from drf_spectacular.contrib.django_oauth_toolkit import DjangoOAuthToolkitScheme
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as BaseOAuth2Authentication
from rest_framework.exceptions import AuthenticationFailed


class OAuth2Authentication(BaseOAuth2Authentication):
    """django-oauth-toolkit's bearer authentication.

    A client-credentials token belongs to no user; it acts as the user its application was
    created for (`createapplication --user`), a service account whose permissions apply. An
    application with no user gets no access.
    """

    def authenticate(self, request):
        result = super().authenticate(request)
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


class OAuth2Scheme(DjangoOAuthToolkitScheme):
    """The OpenAPI description of these tokens: password and client-credentials flows, per-route scopes."""

    target_class = OAuth2Authentication
