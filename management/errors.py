"""Errors a user can cause, raised by services and turned into 4xx answers or form errors."""


class ServiceError(Exception):
    """A request the service refuses; `field` names the input at fault, `status` the HTTP code."""

    status = 400

    def __init__(self, message: str, *, field: str = "detail"):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field: [self.message]}


class Conflict(ServiceError):
    """The request clashes with the current state (a run already active, no model yet)."""

    status = 409


class NotFound(ServiceError):
    """The thing the request names does not exist."""

    status = 404


class InsufficientStorage(ServiceError):
    """The server has no room left for what the request would write."""

    status = 507
