"""For a source checkout: ``gunicorn wsgi:app`` is the same as ``gunicorn course.wsgi:app``."""

from course.wsgi import app

__all__ = ["app"]
