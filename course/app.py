"""The Flask application factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from course.config import (
    DEFAULTS,
    PROJECT_ROOT,
    Settings,
    resolve_instance_paths,
    secret_key_problem,
    settings_from_config,
)
from course.db import make_engine, make_sessionmaker
from course.lessons import LessonLibrary
from course.logs import install_log_masking
from course.security import register_security
from course.tokens import Signer


@dataclass
class CourseState:
    """What the web app shares between requests; kept in ``app.extensions["course"]``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # for pages that only read (see make_sessionmaker)
    signer: Signer
    lessons: LessonLibrary


def state() -> CourseState:
    """The current app's :class:`CourseState`."""
    return current_app.extensions["course"]  # type: ignore[no-any-return]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``COURSE_*`` environment, then ``test_config``."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder=str(PROJECT_ROOT / "templates"),
    )
    app.config.from_mapping(DEFAULTS)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=64 * 1024,  # a signup is a few hundred bytes
        JSON_SORT_KEYS=False,
    )
    app.config.from_prefixed_env("COURSE")
    if test_config:
        app.config.update(test_config)
    resolve_instance_paths(app.config, app.instance_path)
    settings = settings_from_config(app.config)
    install_log_masking()
    configure_cookies(app, settings)
    register_extensions(app, settings)
    register_blueprints(app, settings)
    register_rate_limits(app)
    register_errorhandlers(app)
    register_security(app, settings)
    register_commands(app)

    @app.context_processor
    def _practice() -> dict[str, str]:
        return {"practice_name": settings.practice_name, "crisis_text": settings.crisis_text}

    return app


def configure_cookies(app: Flask, settings: Settings) -> None:
    """Session cookies (used only by the admin): HttpOnly, SameSite, Secure over https."""
    secure = settings.base_url.startswith("https://")
    app.config.update(
        SESSION_COOKIE_NAME="course_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        WTF_CSRF_TIME_LIMIT=8 * 3600,
        RATELIMIT_STORAGE_URI=app.config.get("RATELIMIT_STORAGE_URL") or "memory://",
        RATELIMIT_HEADERS_ENABLED=True,
        # If Redis goes away, count in this process's memory until it is back, rather than
        # failing every signup and login with a 500.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
    )


def register_extensions(app: Flask, settings: Settings) -> None:
    """Database engine, session factory, link signer, login, CSRF and rate limits."""
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    from course.extensions import csrf, login_manager

    engine = make_engine(settings.database_url)
    app.extensions["course"] = CourseState(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        read_sessions=make_sessionmaker(engine, readonly=True),
        signer=Signer(settings.secret_keys),
        lessons=LessonLibrary(settings.lessons_dir),
    )
    # Flask's own signed cookies verify with the same fallback keys, except weak ones: an
    # old weak key may keep emailed links working during a rotation, but must never let
    # anyone forge an admin's session cookie.
    app.config["SECRET_KEY_FALLBACKS"] = [
        key for key in settings.secret_keys[:-1] if secret_key_problem(key) is None
    ]
    # No app-wide context processor: only admin pages need ``current_user`` (the admin
    # blueprint provides it), and loading it on reader pages would open a second database
    # session while the page's own transaction is still open.
    login_manager.init_app(app, add_context_processor=False)
    csrf.init_app(app)
    # One limiter per app (not a module global), so each app has its own store: tests and
    # several apps in one process never share counters by accident.
    app.extensions["course_limiter"] = Limiter(get_remote_address, app=app)


def register_rate_limits(app: Flask) -> None:
    """Attach rate limits to endpoints (here, so the limiter can be per app)."""
    from course.web.admin import LOGIN_LIMITS
    from course.web.public import subscribe_limits

    limiter = app.extensions["course_limiter"]
    settings = app.extensions["course"].settings
    endpoints = {
        "admin.login": LOGIN_LIMITS,
        "public.subscribe_view": subscribe_limits(settings),
    }
    for endpoint, limits in endpoints.items():
        view = app.view_functions[endpoint]
        for limit in limits:
            view = limiter.limit(
                limit.value, key_func=_safe_key(limit.key), methods=["POST"], scope=limit.scope
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
            from flask_limiter.util import get_remote_address

            return "unreadable:" + (get_remote_address() or "-")

    return safe


def register_blueprints(app: Flask, settings: Settings) -> None:
    """Public pages always; the outbox viewer only while mail goes to the outbox folder."""
    from course.extensions import csrf
    from course.web import admin, health, links, public

    app.register_blueprint(public.bp)
    # The reader's pages are reached through signed links: the token in the URL is the
    # credential, so a cross-site request cannot forge one and CSRF tokens are not needed
    # (RFC 8058 one-click unsubscribe must work without cookies or tokens anyway).
    csrf.exempt(links.bp)
    app.register_blueprint(links.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(health.bp)
    # The signup endpoint checks CSRF itself: our own form must carry the token, a form
    # from an allowed origin is vouched for by its Origin header (see course.web.public).
    csrf.exempt(public.subscribe_view)
    if settings.mail_url.startswith("outbox:"):
        from course.web import dev

        app.register_blueprint(dev.bp)


def register_commands(app: Flask) -> None:
    """The ``course`` CLI commands."""
    from course.cli import register_commands as register

    register(app)


def register_errorhandlers(app: Flask) -> None:
    """Friendly pages (or JSON) for 4xx errors instead of Werkzeug's defaults."""
    from werkzeug.exceptions import HTTPException

    from course.web.errors import handle_http_error

    app.register_error_handler(HTTPException, handle_http_error)
