"""The environment variables KerasUI reads, parsed and validated by environs when the settings load.

Each reader records what it declared (`DECLARED`), so the README's configuration table is tested against
the same declarations. A wrong value raises `SettingsError`, one line naming the variable and what it
accepts; `stop_on_bad_settings()` turns that into a one-line exit for manage.py and the servers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from environs import Env, EnvError
from marshmallow import ValidationError
from marshmallow.validate import OneOf, Range

env = Env(eager=True)

BOOLEAN_WORDS = "true/false, yes/no, on/off or 1/0"


class SettingsError(ImproperlyConfigured):
    """An environment variable whose value KerasUI does not accept."""


@dataclass(frozen=True)
class Declared:
    """One variable: its kind, what it accepts and its default."""

    name: str
    kind: str
    accepts: str
    default: object


DECLARED: dict[str, Declared] = {}


def _raw(name: str) -> str | None:
    """The variable's value, or None when it is unset or blank (blank means "use the default")."""
    value = os.environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def _read(name: str, kind: str, accepts: str, default: object, parse):
    DECLARED[name] = Declared(name=name, kind=kind, accepts=accepts, default=default)
    value = _raw(name)
    if value is None:
        return default
    try:
        return parse(value)
    except (EnvError, ValidationError):
        raise SettingsError(f"{name}={value!r} is not accepted: use {accepts}") from None


def boolean(name: str, default: bool) -> bool:
    return _read(name, "boolean", BOOLEAN_WORDS, default, lambda _value: env.bool(name))


def integer(name: str, default: int, *, minimum: int = 0) -> int:
    accepts = f"a whole number, at least {minimum}"
    return _read(name, "integer", accepts, default, lambda _value: env.int(name, validate=Range(min=minimum)))


def number(name: str, default: float, *, minimum: float = 0.0) -> float:
    accepts = f"a number, at least {minimum}"
    return _read(name, "number", accepts, default, lambda _value: env.float(name, validate=Range(min=minimum)))


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    accepts = "one of " + ", ".join(choices)
    return _read(name, "choice", accepts, default, lambda value: OneOf(choices)(value.lower()))


def url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    """A URL; set to blank, "" (the feature it points to is off)."""
    accepts = "a URL starting " + " or ".join(f"{scheme}://" for scheme in schemes)
    if name in os.environ and not os.environ[name].strip():
        DECLARED[name] = Declared(name=name, kind="URL", accepts=accepts, default=default)
        return ""

    def parse(value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme in {"http", "https"}:
            return env.url(name, schemes=set(schemes), require_tld=False).geturl()
        # Brokers' and caches' URLs (memory://, unix:///path, redis://:password@host) are not web URLs:
        # their client parses them; here the scheme is what a typo breaks.
        if scheme not in schemes or not value.startswith(f"{scheme}://"):
            raise ValidationError(f"scheme {scheme!r}")
        return value

    return _read(name, "URL", accepts, default, parse)


def text(name: str, default: str) -> str:
    """Free text; set to blank, "" (as the settings always read it)."""
    DECLARED[name] = Declared(name=name, kind="text", accepts="any text", default=default)
    return os.environ.get(name, default).strip()


def text_list(name: str, default: str = "") -> list[str]:
    DECLARED[name] = Declared(name=name, kind="list", accepts="comma-separated values", default=default)
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def path(name: str, default: Path) -> Path:
    return Path(_read(name, "path", "a folder path", default, lambda value: value))


def rate(name: str, default: str) -> str | None:
    """A DRF rate such as 1200/min; "none" or "off" for no limit."""
    accepts = "a rate such as 1200/min (per sec, min, hour or day), or none"

    def parse(value: str) -> str | None:
        if value.lower() in {"none", "off"}:
            return None
        count, _, period = value.partition("/")
        if not count.isdigit() or period[:1] not in {"s", "m", "h", "d"}:
            raise EnvError(value)
        return value

    DECLARED[name] = Declared(name=name, kind="rate", accepts=accepts, default=default)
    value = _raw(name)
    if value is None and name in os.environ:
        return None  # set to blank: no limit, as before
    try:
        return parse(value if value is not None else default)
    except EnvError:
        raise SettingsError(f"{name}={value!r} is not accepted: use {accepts}") from None


def database(name: str, *, default: str, conn_max_age: int) -> dict:
    """Django's database settings from a database URL (dj-database-url's schemes)."""
    accepts = "a database URL such as postgres://user:password@host:5432/name or sqlite:///path"
    DECLARED[name] = Declared(name=name, kind="URL", accepts=accepts, default=default)
    try:
        return dj_database_url.config(env=name, default=default, conn_max_age=conn_max_age, conn_health_checks=True)
    except (ValueError, dj_database_url.UnknownSchemeError):
        raise SettingsError(f"{name}={os.environ.get(name)!r} is not accepted: use {accepts}") from None


def stop_on_bad_settings() -> None:
    """Load Django's settings now: a refused value ends the process with one line, never a traceback."""
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - loading the settings is the point
    except SettingsError as error:
        sys.stderr.write(f"KerasUI cannot start: {error}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
