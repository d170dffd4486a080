"""The Flask application factory."""

from __future__ import annotations

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
    settings_from_config,
)
from course.db import make_engine, make_sessionmaker
from course.lessons import LessonLibrary
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
    configure_cookies(app, settings)
    register_extensions(app, settings)
    register_blueprints(app, settings)
    register_rate_limits(app)
    register_errorhandlers(app)
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
    # Flask's own signed cookies verify with the same fallback keys.
    app.config["SECRET_KEY_FALLBACKS"] = list(settings.secret_keys[:-1])
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

    limiter = app.extensions["course_limiter"]
    for endpoint, limits in {"admin.login": LOGIN_LIMITS}.items():
        view = app.view_functions[endpoint]
        for limit in limits:
            view = limiter.limit(
                limit.value, key_func=limit.key, methods=["POST"], scope=limit.scope
            )(view)
        app.view_functions[endpoint] = view


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
    csrf.exempt(public.bp)  # signup is public and double opt-in; see issue #6 hardening
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
