"""Deciding stored signup requests: right after the answer, and by every scheduler tick.

``POST /subscribe`` stores the request and answers (``course.web.public``); this module
then applies it (``course.subscriptions.subscribe``), one request per transaction. The web
process does so for its own request as soon as the response has gone out; every scheduler
tick sweeps up whatever is left (a web worker that died in between). No Flask in here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from course.config import Settings
from course.i18n import available_languages, setting_text
from course.models import utcnow
from course.subscriptions import decide_signup_request, take_signup_requests

log = logging.getLogger("course.signups")


def decide_signups(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    request_id: int | None = None,
    clock: Callable[[], datetime] = utcnow,
    limit: int = 1000,
) -> int:
    """Decide stored signup requests (one, or up to ``limit``); returns how many.

    Never raises: it runs after a response has been sent, or inside a scheduler tick. A
    request that fails stays stored and is tried again by the next tick.
    """
    decided = 0
    try:
        wordings = consent_wordings(settings)  # once per call, not once per request
        while decided < limit:
            if not _decide_one(sessions, settings, request_id, clock, wordings):
                break
            decided += 1
            if request_id is not None:
                break
    except Exception:
        log.exception("signup requests could not be decided; the next tick tries again")
    return decided


def consent_wordings(settings: Settings) -> tuple[str, ...]:
    """The signup form's consent wording in every language it is shown in (a German
    course's form shows it in German): the consent record keeps the one a reader saw."""
    return tuple(
        dict.fromkeys(
            setting_text(settings, "signup_consent_text", language)
            for language in available_languages()
        )
    )


def _decide_one(
    sessions: sessionmaker[Session],
    settings: Settings,
    request_id: int | None,
    clock: Callable[[], datetime],
    wordings: tuple[str, ...],
) -> bool:
    """Decide the oldest open request (or ``request_id``); False when there is none."""
    for attempt in (1, 2):
        try:
            with sessions() as session, session.begin():
                requests = take_signup_requests(session, request_id=request_id, limit=1)
                if not requests:
                    return False
                decide_signup_request(session, requests[0], settings, clock(), wordings)
            return True
        except IntegrityError:
            # Another process enrolled the same new address between our lookup and our
            # insert; the second pass finds that row and treats this as a repeat signup.
            if attempt == 2:
                raise
    return False
