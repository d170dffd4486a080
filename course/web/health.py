"""``GET /healthz``: for load balancers and monitoring.

200 with the database reachable and the time of the last scheduler tick; 503 when the
database does not answer. A stale scheduler does not fail the check (the web app is fine
without it); ``scheduler_stale`` says so, and the admin dashboard warns.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from course.app import state
from course.models import SchedulerTick, utcnow

bp = Blueprint("health", __name__)

STALE_TICKS = 5


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Database reachable? When did a scheduler last tick?"""
    course = state()
    try:
        with course.read_sessions() as session:
            last = session.scalar(select(func.max(SchedulerTick.last_tick_at)))
    except SQLAlchemyError:
        return jsonify(status="unavailable", database="unreachable"), 503
    now = utcnow()
    stale_after = max(course.settings.tick_seconds * STALE_TICKS, 60)
    return jsonify(
        status="ok",
        database="ok",
        last_tick_at=last.isoformat() if last else None,
        scheduler_stale=last is None or (now - last).total_seconds() > stale_after,
    )
