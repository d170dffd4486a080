"""What a process shares once it is configured: settings, database, signer, courses.

The web app keeps one :class:`CourseState` in ``app.extensions["course"]`` (reached through
``course.extensions.state``); the operator commands build their own, without Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from course.checks import ContentMonitor
from course.config import Settings
from course.courses import CourseLibrary
from course.crypto import use_keys
from course.db import make_engine, make_sessionmaker
from course.render import Renderer
from course.tokens import Signer


@dataclass
class CourseState:
    """The configured parts of the engine, shared by requests or by one command."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # for pages that only read (see make_sessionmaker)
    signer: Signer
    courses: CourseLibrary  # every course, with its published content (one query a read)
    renderer: Renderer = field(repr=False)
    content: ContentMonitor = field(repr=False)  # are the templates and lessons usable?

    @classmethod
    def build(cls, settings: Settings) -> CourseState:
        """Wire the parts for ``settings`` (the database is not contacted yet)."""
        engine = make_engine(settings.database_url)
        use_keys(settings.data_key_values)  # notes and replies are encrypted with these
        signer = Signer(settings.secret_keys)
        renderer = Renderer(settings, signer)
        sessions = make_sessionmaker(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            read_sessions=make_sessionmaker(engine, readonly=True),
            signer=signer,
            courses=CourseLibrary(sessions),
            renderer=renderer,
            content=ContentMonitor(renderer),
        )

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()
