"""The WSGI entry point for gunicorn: ``gunicorn wsgi:app``. Never starts the scheduler."""

from course.app import create_app

app = create_app()
