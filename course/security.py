"""HTTP hardening: security headers on every response, where a request comes from, safe
redirects, and the signed time stamp that tells a person filling in the form from a bot.

Registered from the app factory by :func:`register_security`. The signup view
(``course.web.public``) uses the origin and redirect checks here.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Sequence
from hashlib import sha256
from urllib.parse import urlsplit

from flask import Flask, Response, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadData, URLSafeSerializer

from course.config import Settings, parse_origin

#: The longest ``next`` URL accepted after a form signup.
MAX_NEXT_LENGTH = 2048
_FORM_SALT = "course.signup-form"


def content_security_policy(settings: Settings) -> str:
    """The Content-Security-Policy sent with every response."""
    form_targets = " ".join(("'self'", *settings.allowed_origins))
    directives = [
        "default-src 'self'",
        # No inline script anywhere: the only script is /static/timezone.js.
        "script-src 'self'",
        # Stylesheets only from us. Emails carry their CSS inlined as style="" attributes
        # (mail apps ignore <style>), and the admin and /dev/outbox show them in a sandboxed
        # srcdoc frame, which inherits this policy; so inline *attributes* are allowed, and
        # nothing else. Style attributes cannot run script.
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        # The signup form may send the visitor back to the practice's site (``next``), and
        # browsers apply form-action to that redirect too.
        f"form-action {form_targets}",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every response carries (a view may set its own instead)."""
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # Every reader page has the reader's key in its URL: never send it to the booking
        # site (or anywhere else) in a Referer header.
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if settings.base_url.startswith("https://"):
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return headers


def register_security(app: Flask, settings: Settings) -> None:
    """Security headers on every response, and trusted proxies."""
    if settings.proxy_count:
        # Behind a reverse proxy every request comes from the proxy's address; per-client
        # rate limits need the client's, which only the trusted proxies may tell us.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxy_count, x_proto=settings.proxy_count
        )
    headers = security_headers(settings)
    app.before_request(refuse_unusable_characters)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        if request.endpoint != "static" and "Cache-Control" not in response.headers:
            # Pages carry personal data (progress, notes, the admin): no shared or disk cache.
            response.headers["Cache-Control"] = "no-store"
        return response


# -- characters no page can use -----------------------------------------------------------

#: NUL (PostgreSQL cannot store it in text) and lone surrogates (no encoder can write them).
_UNUSABLE = re.compile("[\x00\ud800-\udfff]")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
UNUSABLE_MESSAGE = (
    "The request contains characters that cannot be used (a NUL byte or a broken character)."
)


def unusable(text: str) -> bool:
    """Whether ``text`` has a character that cannot reach the database or an encoder."""
    return _UNUSABLE.search(text) is not None


def refuse_unusable_characters() -> ResponseReturnValue | None:
    """Answer 400 to any request whose path, query or form has a NUL byte or a lone
    surrogate, before a view can hand it to the database (which would fail with a 500).
    JSON bodies are checked field by field where they are read (course.subscriptions)."""
    from course.web.errors import error_response

    values = [request.path]
    values += [item for pair in request.args.items(multi=True) for item in pair]
    if request.method == "POST" and request.mimetype in _FORM_TYPES:
        request.get_data(cache=True)  # the raw body stays readable for the views' own checks
        values += [item for pair in request.form.items(multi=True) for item in pair]
    if any(unusable(value) for value in values):
        return error_response(400, UNUSABLE_MESSAGE)
    return None


# -- where a request comes from ----------------------------------------------------------


def own_origin(settings: Settings) -> str:
    """The origin of ``COURSE_BASE_URL``: our own pages."""
    return url_origin(settings.base_url) or settings.base_url


def url_origin(url: object) -> str | None:
    """The origin of an absolute http(s) URL, or None for anything unusual.

    Refuses what browsers and Python parse differently: backslashes, whitespace and
    control characters, user info (``https://ours@evil.example``), non-ASCII, a missing
    host (``https:evil.example``, ``//evil.example``).
    """
    if not isinstance(url, str) or not 0 < len(url) <= MAX_NEXT_LENGTH:
        return None
    if not url.isascii() or not url.isprintable() or " " in url or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    if not url.lower().startswith(f"{parts.scheme.lower()}://"):
        return None
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if parts.netloc.endswith(":"):  # an empty port ("https://host:/") is not an origin
        return None
    suffix = "" if port is None else f":{port}"
    return parse_origin(f"{parts.scheme}://{host}{suffix}")


def request_origin() -> str | None:
    """Where the current request says it comes from: ``Origin``, else ``Referer``.

    Returns the normalised origin, ``"null"`` for an opaque origin (a page with
    ``Referrer-Policy: no-referrer``, like ours, sends ``Origin: null`` with its form posts),
    ``"invalid"`` for a header that is not an origin at all, or None when the request
    names no origin (programs, old browsers).
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.strip() == "null":
            return "null"
        return parse_origin(origin) or "invalid"
    referer = request.headers.get("Referer")
    if referer:
        return url_origin(referer) or "invalid"
    return None


def safe_next_url(value: object, allowed: Sequence[str]) -> str | None:
    """``value`` rebuilt from its checked parts if it points into an allowed origin, else None.

    The redirect goes to ``origin + path (+ query, fragment)`` as parsed here, never to the
    raw text, so what the browser follows is exactly what was checked.
    """
    origin = url_origin(value)
    if origin is None or origin not in allowed:
        return None
    parts = urlsplit(str(value))
    path = parts.path or "/"
    if not path.startswith("/"):
        return None
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{origin}{path}{query}{fragment}"


# -- the form's fill time ----------------------------------------------------------------


def _form_serializer(secret_keys: Sequence[str]) -> URLSafeSerializer:
    return URLSafeSerializer(list(secret_keys), salt=_FORM_SALT)


def form_stamp(secret_keys: Sequence[str], issued_at: float | None = None) -> str:
    """A signed time stamp for the hosted form (``issued_at`` for tests: seconds since epoch)."""
    moment = time.time() if issued_at is None else issued_at
    return str(_form_serializer(secret_keys).dumps(int(moment)))


def form_age(secret_keys: Sequence[str], stamp: object, now: float | None = None) -> float | None:
    """Seconds since the form was served, or None if ``stamp`` is not one of ours.

    The clock is injectable (``now``) so tests need not sleep.
    """
    if not isinstance(stamp, str) or len(stamp) > 200:
        return None
    try:
        issued = _form_serializer(secret_keys).loads(stamp)
    except (BadData, UnicodeError, ValueError, TypeError):
        return None
    if not isinstance(issued, int) or isinstance(issued, bool):
        return None
    return (time.time() if now is None else now) - issued


def keyed_hash(secret_keys: Sequence[str], text: str) -> str:
    """A short keyed hash of ``text``, so rate-limit keys never hold an email address."""
    return hmac.new(secret_keys[-1].encode(), text.encode(), sha256).hexdigest()[:32]
