"""The shipped templates. This folder is installed as the package ``course.templates``
(see ``course/resources.py``); the file only makes it a package."""
