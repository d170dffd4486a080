"""The files that ship inside the package: templates, static files and the default course.

In the repository they live in the top-level ``templates/`` and ``lessons/`` folders (and
``course/static``); ``pyproject.toml`` maps the first two into the wheel as the packages
``course.templates`` and ``course.default_lessons``. They are always found through
:mod:`importlib.resources`, never by a path relative to the source tree, so an installed
wheel with no source tree around it has everything it needs. (An editable install finds the
same packages in the repository, so ``make run`` picks up edits at once.)

A practice can put its own files in front: ``COURSE_TEMPLATES_DIR`` holds templates that
take precedence over the shipped ones (same names), and ``COURSE_LESSONS_DIR`` replaces the
shipped course.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader

from course.config import Settings

TEMPLATES_PACKAGE = "course.templates"
LESSONS_PACKAGE = "course.default_lessons"


def package_dir(package: str) -> Path:
    """The folder of a shipped package (wheels install as plain folders, never zipped)."""
    return Path(str(files(package)))


def template_dirs(settings: Settings) -> list[Path]:
    """Where templates are looked up, first match wins: the practice's folder, then ours."""
    dirs = [settings.templates_dir] if settings.templates_dir else []
    return [*dirs, package_dir(TEMPLATES_PACKAGE)]


def template_loader(settings: Settings) -> BaseLoader:
    """A Jinja loader over :func:`template_dirs` (for the pages and for the emails)."""
    return ChoiceLoader([FileSystemLoader(path) for path in template_dirs(settings)])


def lessons_dir(settings: Settings) -> Path:
    """The folder of lesson files: ``COURSE_LESSONS_DIR``, or the shipped course."""
    return settings.lessons_dir or package_dir(LESSONS_PACKAGE)
