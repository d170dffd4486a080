"""Health checks for uptime monitors and load balancers.

``GET /healthz`` is the whole product's health, for an uptime monitor. It answers 200 only
when the database answers, a scheduler has ticked recently, the templates and lessons load,
no delivery is overdue by more than ``COURSE_HEALTH_MAX_DELAY_MINUTES`` and fewer than
``COURSE_HEALTH_MAX_FAILED`` deliveries failed in the last 24 hours (bounced readers
aside). Otherwise it answers 503 with the reasons as JSON.

``GET /healthz/web`` is only this web process's health, for a load balancer: 200 while it
can serve pages (its database answers). A stopped scheduler must not take the website out
of rotation; it makes ``/healthz`` fail instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from course.extensions import state
from course.models import utcnow
from course.reports import alarms

bp = Blueprint("health", __name__)


def init_app(app: Flask) -> None:
    """Register ``/healthz`` and ``/healthz/web``."""
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Everything a practice relies on: database, scheduler, content, sending."""
    course = state()
    settings = course.settings
    now = utcnow()
    body: dict[str, Any] = {"status": "ok", "reasons": []}
    try:
        with course.read_sessions() as session, session.begin():
            found = alarms(
                session,
                now,
                settings.tick_seconds,
                timedelta(minutes=settings.health_max_delay_minutes),
            )
    except SQLAlchemyError:
        body.update(status="unhealthy", database="unreachable")
        body["reasons"].append("the database does not answer")
        return jsonify(body), 503
    content = course.content.report(course.courses.current(), now)
    body.update(
        database="ok",
        last_tick_at=found.last_tick.isoformat() if found.last_tick else None,
        scheduler_stale=found.scheduler_stale,
        content="ok" if content.healthy else "broken",
        overdue=found.overdue,
        failed_24h=found.failed_24h,
        failed_total=found.failed_total,
    )
    reasons = found.reasons(settings.health_max_failed)
    reasons += [f"content: {problem}" for problem in content.problems]
    if reasons:
        body.update(status="unhealthy", reasons=reasons)
        return jsonify(body), 503
    return jsonify(body)


@bp.get("/healthz/web")
def healthz_web() -> ResponseReturnValue:
    """This web process: can it reach its database?"""
    try:
        with state().read_sessions() as session, session.begin():
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return jsonify(status="unhealthy", database="unreachable"), 503
    return jsonify(status="ok", database="ok")
