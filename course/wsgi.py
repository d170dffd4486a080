"""The WSGI entry point for gunicorn: ``gunicorn course.wsgi:app``. Never starts the scheduler.

It is part of the installed package, so it works from any directory with no source tree.
A missing or bad setting stops the start with a message naming it (gunicorn then exits).
"""

from __future__ import annotations

import sys

from course.app import create_app
from course.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # A clear message instead of a traceback: this is the first thing a deployer sees.
    print(f"Configuration error:\n  {str(exc).replace(chr(10), chr(10) + '  ')}", file=sys.stderr)
    raise SystemExit(2) from None
