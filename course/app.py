"""The Flask application factory: a list of small named steps over one :class:`Settings`.

Flask's config is derived from the settings here (``flask_config``); nothing reads the
environment but ``course.config``. The factory imports the blueprints, never the reverse:
what they share lives in ``course.extensions``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask, g

from course.checks import check_templates, courses_at_start, log_content_problems
from course.config import ALL_NEEDS, Settings, load_settings, secret_key_problem
from course.crisis import country_for_timezone
from course.i18n import page_language, setting_text
from course.logs import install_log_masking
from course.models import utcnow
from course.resources import template_loader
from course.runtime import CourseState

log = logging.getLogger("course.app")


def create_app(
    test_config: Mapping[str, Any] | None = None, *, settings: Settings | None = None
) -> Flask:
    """Build the app from the ``COURSE_*`` environment (or ``settings``).

    ``test_config`` keys that name a setting (``"DATABASE_URL"``) override it; other keys
    (``"TESTING"``) go to Flask's config as they are. Raises ``ConfigError`` when something
    the app needs is missing.
    """
    overrides, flask_extra = split_overrides(test_config or {})
    if settings is None:
        settings = load_settings(overrides)
    settings.require(*ALL_NEEDS)
    install_log_masking()
    app = Flask(__name__, instance_path=str(settings.instance_dir), instance_relative_config=True)
    app.config.update(flask_config(settings))
    app.config.update(flask_extra)
    # A link with an empty token ("/me//pause") is a bad link (404), not a redirect to
    # another page ("/me/pause" would read "pause" as the token).
    app.url_map.merge_slashes = False
    # Pages come from the shipped templates, with the practice's own folder in front.
    app.jinja_loader = template_loader(settings)
    register_extensions(app, settings)
    register_translations(app)
    register_blueprints(app, settings)
    register_errorhandlers(app)
    register_security_headers(app, settings)
    register_context(app, settings)
    check_content_at_start(app)
    return app


def split_overrides(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``config`` into settings (by field name) and plain Flask config."""
    fields = set(Settings.model_fields)
    settings = {k: v for k, v in config.items() if k.lower() in fields}
    flask = {k: v for k, v in config.items() if k.lower() not in fields}
    return settings, flask


def flask_config(settings: Settings) -> dict[str, Any]:
    """Flask's config, derived from the settings."""
    secure = settings.base_url.startswith("https://")
    return {
        "SECRET_KEY": settings.secret_keys[-1],
        # Flask's signed cookies verify with the same fallback keys (as strong as the main
        # key outside development, see Settings.problems), newest first.
        "SECRET_KEY_FALLBACKS": [
            key for key in reversed(settings.secret_keys[:-1]) if secret_key_problem(key) is None
        ],
        "MAX_CONTENT_LENGTH": 64 * 1024,  # a signup is a few hundred bytes
        "JSON_SORT_KEYS": False,
        # Session cookies (used only by the admin): HttpOnly, SameSite, Secure over https.
        "SESSION_COOKIE_NAME": "course_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": secure,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": secure,
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
        "WTF_CSRF_TIME_LIMIT": 8 * 3600,
        # Flask-WTF's "SSL strict" check wants a same-origin Referer on every https POST,
        # but our pages say Referrer-Policy: no-referrer, so browsers send none and every
        # form would fail behind https. The CSRF token (in the SameSite, HttpOnly, Secure
        # session cookie) is the protection; /subscribe also checks Origin itself.
        "WTF_CSRF_SSL_STRICT": False,
        "RATELIMIT_STORAGE_URI": settings.ratelimit_storage_url,
        "RATELIMIT_HEADERS_ENABLED": True,
        # If Redis goes away, count in this process's memory until it is back, rather than
        # failing every signup and login with a 500.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    }


def register_extensions(app: Flask, settings: Settings) -> None:
    """Shared state (database, signer, lessons), login, CSRF and the rate limiter."""
    from course.extensions import csrf, login_manager
    from course.web.ratelimits import init_limiter

    app.extensions["course"] = CourseState.build(settings)
    # No app-wide context processor: only admin pages need ``current_user`` (the admin
    # blueprint provides it), and loading it on reader pages would open a second database
    # session while the page's own transaction is still open.
    login_manager.init_app(app, add_context_processor=False)
    csrf.init_app(app)
    init_limiter(app)


def register_translations(app: Flask) -> None:
    """Flask-Babel: each page in its reader's (or staff member's) language (course.i18n)."""
    from course import i18n

    i18n.init_app(app)


def register_blueprints(app: Flask, settings: Settings) -> None:
    """One blueprint per audience; the outbox viewer only in development."""
    from course.web import (
        admin,
        admin_courses,  # noqa: F401 - adds the course editor to admin.bp
        bookings,
        health,
        links,
        public,
        webhooks,
    )

    public.init_app(app)
    links.init_app(app)
    admin.init_app(app)
    health.init_app(app)
    webhooks.init_app(app)
    bookings.init_app(app)
    if settings.development:
        # Never outside development, whatever the transport: the outbox viewer shows
        # readers' addresses and their signed links, without a login.
        from course.web import dev

        dev.init_app(app)


def register_errorhandlers(app: Flask) -> None:
    """Friendly pages (or JSON) for 4xx errors instead of Werkzeug's defaults."""
    from werkzeug.exceptions import HTTPException

    from course.web.errors import handle_http_error

    app.register_error_handler(HTTPException, handle_http_error)


def register_security_headers(app: Flask, settings: Settings) -> None:
    """Security headers on every response, and trusted proxies."""
    from course.security import register_security

    register_security(app, settings)


def register_context(app: Flask, settings: Settings) -> None:
    """What every page's template may use."""

    default_country = country_for_timezone(settings.default_timezone)

    @app.context_processor
    def _practice() -> dict[str, object]:
        # Reader pages set g.reader_country (course.web.links); everyone else sees the
        # practice's own country's resources.
        country = g.get("reader_country", default_country)
        language = page_language()  # the course's for a reader, the staff's in the admin
        return {
            "practice_name": settings.practice_name,
            "crisis_text": setting_text(settings, "crisis_text", language),
            "crisis": app.extensions["course"].renderer.crisis_for(country, language),
            "privacy_url": settings.privacy_url,
            "imprint_url": settings.imprint_url,
            "postal_address": settings.postal_address,
            "notes_notice": setting_text(settings, "notes_notice", language),
        }


def check_content_at_start(app: Flask) -> None:
    """Check templates and lessons now; log each problem with its file (``/healthz`` keeps
    reporting them until they are fixed)."""
    course: CourseState = app.extensions["course"]
    course.content.page_problems = check_templates(app.jinja_env, "web")
    courses = courses_at_start(course.courses, "web app")
    if courses is not None:
        log_content_problems(course.content.report(courses, utcnow()), "web app")
