"""Flask extensions, as bare objects initialised in the app factory."""

from __future__ import annotations

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
login_manager.login_view = "admin.login"
login_manager.login_message = "Please sign in to see the course dashboard."
login_manager.session_protection = "strong"

csrf = CSRFProtect()
