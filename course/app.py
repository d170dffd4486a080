"""The Flask application factory."""

from __future__ import annotations

from dataclasses import dataclass
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
    register_extensions(app, settings)
    register_blueprints(app, settings)
    register_errorhandlers(app)
    register_commands(app)

    @app.context_processor
    def _practice() -> dict[str, str]:
        return {"practice_name": settings.practice_name, "crisis_text": settings.crisis_text}

    return app


def register_extensions(app: Flask, settings: Settings) -> None:
    """Database engine, session factory and link signer."""
    engine = make_engine(settings.database_url)
    app.extensions["course"] = CourseState(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        signer=Signer(settings.secret_keys),
        lessons=LessonLibrary(settings.lessons_dir),
    )
    # Flask's own signed cookies verify with the same fallback keys.
    app.config["SECRET_KEY_FALLBACKS"] = list(settings.secret_keys[:-1])


def register_blueprints(app: Flask, settings: Settings) -> None:
    """Public pages always; the outbox viewer only while mail goes to the outbox folder."""
    from course.web import links, public

    app.register_blueprint(public.bp)
    app.register_blueprint(links.bp)
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
