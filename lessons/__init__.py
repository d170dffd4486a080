"""The shipped five-day course. This folder is installed as the package
``course.default_lessons`` (see ``course/resources.py``); the file only makes it a package.
Lessons are the ``*.md`` files next to it."""
