"""Flask extensions as bare objects, and the app's shared state, for the blueprints.

Blueprints import what they share from here, never from the app factory: the factory
imports the blueprints, so the reverse would be an import circle. This is where flaskr
keeps ``get_db``.
"""

from __future__ import annotations

from flask import current_app
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from course.runtime import CourseState

login_manager = LoginManager()
login_manager.login_view = "admin.login"
login_manager.login_message = "Please sign in to see the course dashboard."
login_manager.session_protection = "strong"

csrf = CSRFProtect()


def state() -> CourseState:
    """The current app's :class:`CourseState`."""
    return current_app.extensions["course"]  # type: ignore[no-any-return]
