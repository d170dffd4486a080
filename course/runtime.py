"""What a process shares once it is configured: settings, database, signer, lessons.

The web app keeps one :class:`CourseState` in ``app.extensions["course"]`` (reached through
``course.extensions.state``); the operator commands build their own, without Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from course.checks import ContentMonitor
from course.config import Settings
from course.crypto import use_keys
from course.db import make_engine, make_sessionmaker
from course.lessons import LessonLibrary
from course.render import Renderer
from course.resources import lessons_dir
from course.tokens import Signer


@dataclass
class CourseState:
    """The configured parts of the engine, shared by requests or by one command."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # for pages that only read (see make_sessionmaker)
    signer: Signer
    lessons: LessonLibrary
    renderer: Renderer = field(repr=False)
    content: ContentMonitor = field(repr=False)  # are the templates and lessons usable?

    @classmethod
    def build(cls, settings: Settings) -> CourseState:
        """Wire the parts for ``settings`` (the database is not contacted yet)."""
        engine = make_engine(settings.database_url)
        use_keys(settings.data_key_values)  # notes and replies are encrypted with these
        signer = Signer(settings.secret_keys)
        renderer = Renderer(settings, signer)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            read_sessions=make_sessionmaker(engine, readonly=True),
            signer=signer,
            lessons=LessonLibrary(lessons_dir(settings)),
            renderer=renderer,
            content=ContentMonitor(renderer),
        )

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()
