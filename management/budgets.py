"""Budgets of decoded pixels: per image, per request (a batch's sum) and per user per minute.

The cost of every image of a request is read from its header (ml/images.decoded_pixels) before any is
decoded, so a refused request costs milliseconds: 413 when one image or the request is over its limit,
429 with Retry-After when the user has spent their minute's budget. Each answer names the limit and the
setting that sets it.

The per-user counter is kept in Redis when the cache is Redis (every worker shares it), otherwise in
this process's memory: no database write per request, and each worker process then grants a user its
own minute's budget.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.core.cache import cache

from management.errors import ServiceError
from ml.images import TooManyPixels, decoded_pixels

WINDOW_SECONDS = 60


class TooLarge(ServiceError):
    """An image or a request asks for more decoded pixels than one request may decode."""

    status = 413

    def __init__(self, message: str, *, field: str, setting: str, limit: int):
        super().__init__(message, field=field)
        self.setting = setting
        self.limit = limit

    def as_dict(self) -> dict:
        return {self.field: [self.message], "setting": self.setting, "limit": self.limit}


class OverBudget(TooLarge):
    """The user has decoded their minute's worth of pixels: try again when the minute ends."""

    status = 429

    def __init__(self, message: str, *, field: str, setting: str, limit: int, retry_after: int):
        super().__init__(message, field=field, setting=setting, limit=limit)
        self.retry_after = retry_after


_lock = threading.Lock()
_spent: dict[tuple[int, int], int] = {}  # (user id, minute) -> pixels, this process's own count


def _spend_here(user_id: int, window: int, pixels: int) -> int:
    with _lock:
        for key in [key for key in _spent if key[1] < window]:
            del _spent[key]
        total = _spent.get((user_id, window), 0) + pixels
        _spent[(user_id, window)] = total
        return total


def _spend_shared(user_id: int, window: int, pixels: int) -> int:
    key = f"pixels:{user_id}:{window}"
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        return cache.incr(key, pixels)
    except ValueError:  # the window ended between add() and incr()
        cache.set(key, pixels, timeout=WINDOW_SECONDS + 5)
        return pixels


def user_pixels_spend(*, user_id: int, pixels: int, now: float | None = None) -> tuple[int, int]:
    """Add `pixels` to the user's count of this minute; (the count, seconds until the minute ends)."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    spend = _spend_shared if settings.KERASUI_REDIS_URL else _spend_here
    return spend(user_id, window, pixels), int((window + 1) * WINDOW_SECONDS - now) + 1


def user_pixels_reset() -> None:
    """Forget this process's counts (tests)."""
    with _lock:
        _spent.clear()


def image_too_large(*, name: str, error: TooManyPixels, field_name: str = "image") -> TooLarge:
    """The 413 for an image whose header says it has more pixels than KERASUI_MAX_IMAGE_PIXELS."""
    limit = settings.KERASUI_MAX_IMAGE_PIXELS
    return TooLarge(
        f"{name}: {error.pixels:,} pixels; at most {limit:,} per image (KERASUI_MAX_IMAGE_PIXELS)",
        field=field_name,
        setting="KERASUI_MAX_IMAGE_PIXELS",
        limit=limit,
    )


def image_pixels_check(*, name: str, data: bytes, field_name: str = "image", side: int | None = None) -> int:
    """The pixels decoding `data` will fill (see decoded_pixels); 413 above KERASUI_MAX_IMAGE_PIXELS,
    400 for what is not an image."""
    limit = settings.KERASUI_MAX_IMAGE_PIXELS
    try:
        return decoded_pixels(data, side=side, max_pixels=limit or None)
    except TooManyPixels as error:
        raise image_too_large(name=name, error=error, field_name=field_name) from None
    except ValueError as error:
        raise ServiceError(f"{name}: {error}", field=field_name) from None


def pixel_budget_charge(
    *, images: list[tuple[str, bytes]], user_id: int | None, field_name: str = "image", side: int | None = None
) -> int:
    """Check a request's images against the three pixel budgets before any is decoded, and count them
    against the user's minute. Returns the request's pixels; raises TooLarge (413) or OverBudget (429)."""
    total = sum(image_pixels_check(name=name, data=data, field_name=field_name, side=side) for name, data in images)
    return pixels_budget_charge(pixels=total, user_id=user_id, field_name=field_name)


def pixels_budget_charge(*, pixels: int, user_id: int | None, field_name: str = "image") -> int:
    """Hold `pixels` (a request's, each image already within KERASUI_MAX_IMAGE_PIXELS) to the request's
    and the user's budgets, counting them against the user's minute: for a caller that has read the
    headers itself (the import opens each image once)."""
    total = pixels
    request_limit = settings.KERASUI_MAX_REQUEST_PIXELS
    if request_limit and total > request_limit:
        raise TooLarge(
            f"these images decode to {total:,} pixels; at most {request_limit:,} per request "
            f"(KERASUI_MAX_REQUEST_PIXELS): send fewer or smaller images",
            field=field_name,
            setting="KERASUI_MAX_REQUEST_PIXELS",
            limit=request_limit,
        )
    user_limit = settings.KERASUI_MAX_USER_PIXELS_PER_MINUTE
    if user_limit and user_id is not None:
        spent, wait = user_pixels_spend(user_id=user_id, pixels=total)
        if spent > user_limit:
            user_pixels_spend(user_id=user_id, pixels=-total)  # refused: nothing is decoded
            raise OverBudget(
                f"{spent:,} pixels decoded for this account this minute; at most {user_limit:,} "
                f"(KERASUI_MAX_USER_PIXELS_PER_MINUTE): try again in {wait} seconds",
                field=field_name,
                setting="KERASUI_MAX_USER_PIXELS_PER_MINUTE",
                limit=user_limit,
                retry_after=wait,
            )
    return total
