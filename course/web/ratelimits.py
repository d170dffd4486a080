"""Rate limits on endpoints, with one Flask-Limiter per app.

One limiter per app (not a module global), so each app has its own store: tests and several
apps in one process never share counters by accident. Blueprints declare their limits as
:class:`RateLimit` values and attach them in their ``init_app`` with :func:`limit_endpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


@dataclass(frozen=True)
class RateLimit:
    """One limit: ``value`` such as "5 per minute", counted per ``key`` (None: client).

    ``exempt_when``: skip this limit for the current request when it returns True.
    ``deduct_when``: count only requests whose response it returns True for (the limit is
    still checked before the view runs). Both are Flask-Limiter's options of the same name.
    """

    value: str
    key: Callable[[], str] | None = None
    scope: str | None = None
    exempt_when: Callable[[], bool] | None = None
    deduct_when: Callable[[Response], bool] | None = None


def init_limiter(app: Flask) -> Limiter:
    """Create this app's limiter (storage from ``RATELIMIT_STORAGE_URI``)."""
    limiter = Limiter(get_remote_address, app=app)
    app.extensions["course_limiter"] = limiter
    return limiter


def limit_endpoint(app: Flask, endpoint: str, limits: Iterable[RateLimit]) -> None:
    """Apply ``limits`` to the POSTs of ``endpoint``."""
    limiter: Limiter = app.extensions["course_limiter"]
    view: Any = app.view_functions[endpoint]
    for limit in limits:
        view = limiter.limit(
            limit.value,
            key_func=_safe_key(limit.key),
            methods=["POST"],
            scope=limit.scope,
            exempt_when=limit.exempt_when,
            deduct_when=limit.deduct_when,
        )(view)
    app.view_functions[endpoint] = view


def _safe_key(key: Callable[[], str] | None) -> Callable[[], str] | None:
    """A rate-limit key function that never raises.

    Key functions read the body (the address being signed up or logged in). If that fails
    (a body over MAX_CONTENT_LENGTH, broken multipart), Flask-Limiter would take the error
    for a broken limit store and switch to its in-memory fallback; count the client instead
    and let the view answer the bad body (413, 400).
    """
    if key is None:
        return None

    def safe() -> str:
        try:
            return key()
        except Exception:
            return "unreadable:" + (get_remote_address() or "-")

    return safe
