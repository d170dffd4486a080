"""Reading the bounce and replies mailboxes: every message is handled once, none is lost.

The scheduler runs :func:`check_mailbox` every ``COURSE_MAILBOX_CHECK_MINUTES`` for
``COURSE_BOUNCE_MAILBOX_URL`` and ``COURSE_REPLIES_MAILBOX_URL``; ``course bounces check``
runs it on demand. For each message: parse it (``course.feedback``), apply it to its reader
(``course.bounces``) and commit, then tell the mailbox. A message that was used is moved
or deleted there; one that matched no reader or could not be read is kept (moved to a
folder of its own, or on POP3 left on the server and skipped from then on) and counted.

A fingerprint of every message handled is stored (``inbound_messages``) in the same
transaction as its effect, so a crash between the database and the mailbox never applies
a message twice: the next run finds the fingerprint and only tells the mailbox.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from course.bounces import apply_feedback
from course.care import risk_phrases
from course.config import Settings
from course.feedback import parse_feedback
from course.mail.mailbox import MailboxError, open_mailbox
from course.models import InboundMessage

log = logging.getLogger("course.mailroom")

#: Outcomes of messages that were not used: kept in the mailbox for a person to look at.
KEPT = frozenset({"unmatched", "unusable"})
#: How long fingerprints of handled messages are remembered (kept ones: as long as POP3
#: may show them again, so for good).
REMEMBER = timedelta(days=90)


def fingerprint(source: str, raw: bytes) -> str:
    """What makes a message the same message, wherever it is read from (IMAP and POP3 hand
    out CRLF line ends, a Maildir file may have LF)."""
    digest = hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()
    return f"{source}:{digest[:64]}"


def check_mailbox(
    sessions: sessionmaker[Session],
    settings: Settings,
    url: str,
    source: str,
    clock: Callable[[], datetime],
    limit: int = 500,
) -> Counter[str]:
    """Handle up to ``limit`` messages of one mailbox; returns how many had each outcome.

    Raises :class:`course.mail.mailbox.MailboxError` when the mailbox cannot be read.
    """
    outcomes: Counter[str] = Counter()
    with sessions() as session:
        skip = frozenset(
            session.scalars(
                select(InboundMessage.mailbox_id).where(
                    InboundMessage.source == source,
                    InboundMessage.outcome.in_(KEPT),
                    InboundMessage.mailbox_id.is_not(None),
                )
            )
        )
    with open_mailbox(url) as box:
        for mailbox_id, raw in box.messages(limit=limit, skip=frozenset(s for s in skip if s)):
            outcome = _handle(sessions, settings, source, mailbox_id, raw, clock())
            outcomes[outcome] += 1
            if outcome in KEPT:
                box.kept(mailbox_id)
            else:
                box.processed(mailbox_id)
    return outcomes


def _handle(
    sessions: sessionmaker[Session],
    settings: Settings,
    source: str,
    mailbox_id: str,
    raw: bytes,
    now: datetime,
) -> str:
    key = fingerprint(source, raw)
    with sessions() as session, session.begin():
        seen = session.get(InboundMessage, key)
        if seen is not None:
            return seen.outcome  # applied before; only the mailbox was not told
        outcome = apply_feedback(
            session,
            parse_feedback(raw),
            secret_keys=settings.secret_keys,
            soft_bounce_limit=settings.soft_bounce_limit,
            phrases=risk_phrases(settings.risk_phrases_file),
            now=now,
            via=source,
        )
        session.add(
            InboundMessage(
                key=key, source=source, mailbox_id=mailbox_id, outcome=outcome, created_at=now
            )
        )
    return outcome


def mailboxes(settings: Settings) -> list[tuple[str, str]]:
    """The configured mailboxes: (source, url)."""
    found = []
    if settings.bounce_mailbox_url:
        found.append(("bounces", settings.bounce_mailbox_url))
    if settings.replies_mailbox_url:
        found.append(("replies", settings.replies_mailbox_url))
    return found


def check_all(
    sessions: sessionmaker[Session], settings: Settings, clock: Callable[[], datetime]
) -> dict[str, Counter[str] | str]:
    """Check every configured mailbox; a mailbox that cannot be read is reported, never
    raised (the other one is still checked)."""
    results: dict[str, Counter[str] | str] = {}
    for source, url in mailboxes(settings):
        try:
            results[source] = check_mailbox(sessions, settings, url, source, clock)
        except MailboxError as exc:
            log.warning("mailbox=%s cannot be read: %s", source, exc)
            results[source] = str(exc)
    forget_old(sessions, clock())
    return results


def forget_old(sessions: sessionmaker[Session], now: datetime) -> None:
    """Forget fingerprints of used messages after a while (they are gone from the mailbox)."""
    with sessions() as session, session.begin():
        session.execute(
            delete(InboundMessage).where(
                InboundMessage.created_at < now - REMEMBER, InboundMessage.outcome.not_in(KEPT)
            )
        )
