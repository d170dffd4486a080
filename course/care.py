"""A human notices: the "Needs a look" list, risk phrases, and alerts to the practice.

Readers write private notes and replies, and answer "It stirred things up". Some of them
are in a hard moment, and a few may write that they want to hurt themselves. This module
makes sure such signals reach a person at the practice:

- **Needs a look** (:func:`needs_a_look`) lists readers who answered "It stirred things
  up", and readers whose note or reply matched one of the practice's risk phrases. Staff
  mark each item "seen" or "contacted" (:func:`mark`); everyone at the practice sees who
  did it and when.
- **Risk phrases** (:class:`RiskPhrases`) are matched when a note or reply is saved,
  robustly: case and accents do not matter, and a word written ``kill*`` matches "kill",
  "kills", "killing". The shipped list follows the warning signs that suicide-prevention
  guidance names (talking about wanting to die or to kill oneself, having no reason to
  live, being a burden, feeling trapped or in unbearable pain, self-harm) and signs of
  danger from a partner; a practice can replace it (``COURSE_RISK_PHRASES_FILE``). Only the
  ids of the phrases that matched are stored, never words of the note.
- **Alerts** go to ``COURSE_CARE_EMAIL`` when a risk phrase matches, grouped (at most one
  email per ``COURSE_CARE_ALERT_MINUTES``), and never contain the note: only how many items
  wait, and a link to the admin.

What this is not: a monitoring service. Nobody watches around the clock; an alert is read
when someone at the practice reads their email. The reader is told so next to the note form
(``COURSE_NOTES_NOTICE``), and every page and email shows crisis resources for their country.
Functions take a session and never commit, except :func:`send_alerts`, the scheduler's job.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from course.config import Settings
from course.envelope import bounce_address
from course.mail import DeliveryError, Transport
from course.models import (
    CareAlert,
    CareMark,
    CheckIn,
    LessonProgress,
    Operator,
    Reply,
    Subscriber,
)
from course.render import envelope_address

log = logging.getLogger("course.care")

#: How far back the list looks.
WINDOW = timedelta(days=30)
STATUSES = ("seen", "contacted")


# -- risk phrases --------------------------------------------------------------------------


def normalise(text: str) -> list[str]:
    """The words of ``text``, case- and accent-folded ("Ich möchte STERBEN" -> ich, mochte,
    sterben), apostrophes dropped ("can't" -> cant)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    plain = plain.replace("ß", "ss").replace("'", "").replace("\u2019", "")
    return re.findall(r"\w+", plain)


@dataclass(frozen=True)
class Phrase:
    """One risk phrase: its words (a trailing ``*`` makes a word a stem), and a stable id."""

    text: str
    words: tuple[str, ...]

    @property
    def id(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:8]

    def found_in(self, words: Sequence[str]) -> bool:
        """Whether the phrase's words occur in ``words``, in a row."""
        size = len(self.words)
        for start in range(len(words) - size + 1):
            if all(
                words[start + i].startswith(w[:-1]) if w.endswith("*") else words[start + i] == w
                for i, w in enumerate(self.words)
            ):
                return True
        return False


class RiskPhrases:
    """A practice's list of risk phrases, matched robustly."""

    def __init__(self, lines: Iterable[str]) -> None:
        phrases = []
        for line in lines:
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            words = tuple(
                w + ("*" if token.endswith("*") else "")
                for token in text.split()
                for w in normalise(token)[:1]
            )
            if words:
                phrases.append(Phrase(text, words))
        self.phrases = tuple(phrases)
        self._by_id = {p.id: p for p in self.phrases}

    def match(self, text: str) -> list[Phrase]:
        """The phrases found in ``text``."""
        words = normalise(text)
        return [p for p in self.phrases if p.found_in(words)]

    def text_of(self, ids: str | None) -> list[str]:
        """The phrases behind a stored list of ids (for staff; an unknown id is shown as
        such, e.g. after the list was edited)."""
        if not ids:
            return []
        return [
            self._by_id[i].text if i in self._by_id else f"(phrase {i})" for i in ids.split(",")
        ]


@lru_cache(maxsize=8)
def risk_phrases(path: Path | None) -> RiskPhrases:
    """The practice's list (``COURSE_RISK_PHRASES_FILE``), or the shipped one."""
    if path is not None:
        return RiskPhrases(path.read_text(encoding="utf-8").splitlines())
    shipped = files("course.data").joinpath("risk_phrases.txt").read_text(encoding="utf-8")
    return RiskPhrases(shipped.splitlines())


def flag(session: Session, item: str, matched: Sequence[Phrase], now: datetime) -> str | None:
    """The ids to store for a note or reply that matched ``matched``, and an alert queued
    for the care address when it matched anything."""
    if not matched:
        return None
    session.add(CareAlert(item=item, created_at=now))
    return ",".join(p.id for p in matched)


# -- the list ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CareItem:
    """One thing on the "Needs a look" list."""

    item: str  # "checkin:<progress id>", "note:<progress id>" or "reply:<reply id>"
    kind: str  # "stirred", "note" or "reply"
    public_id: str
    reader: str  # their name, else their address
    lesson: int | None
    at: datetime
    phrases: tuple[str, ...]  # the risk phrases that matched (never the reader's words)
    status: str  # "new", "seen" or "contacted"
    marked_by: str | None
    marked_at: datetime | None

    @property
    def urgent(self) -> bool:
        return bool(self.phrases)


def needs_a_look(
    session: Session,
    now: datetime,
    phrases: RiskPhrases,
    *,
    window: timedelta = WINDOW,
    include_done: bool = True,
) -> list[CareItem]:
    """Stirred check-ins and risk-phrase matches of the last ``window``: urgent and new
    ones first, then the newest."""
    since = now - window
    found: list[tuple[str, str, Subscriber, int | None, datetime, str | None]] = []
    for row, sub in session.execute(
        select(LessonProgress, Subscriber)
        .join(Subscriber, Subscriber.id == LessonProgress.subscriber_id)
        .where(LessonProgress.checkin == CheckIn.STIRRED, LessonProgress.checkin_at >= since)
    ).all():
        if row.checkin_at is not None:
            item = f"checkin:{row.id}"
            found.append((item, "stirred", sub, row.lesson, row.checkin_at, None))
    for row, sub in session.execute(
        select(LessonProgress, Subscriber)
        .join(Subscriber, Subscriber.id == LessonProgress.subscriber_id)
        .where(LessonProgress.risk.is_not(None), LessonProgress.note_at >= since)
    ).all():
        if row.note_at is not None:
            found.append((f"note:{row.id}", "note", sub, row.lesson, row.note_at, row.risk))
    for reply, sub in session.execute(
        select(Reply, Subscriber)
        .join(Subscriber, Subscriber.id == Reply.subscriber_id)
        .where(Reply.risk.is_not(None), Reply.received_at >= since)
    ).all():
        found.append(
            (f"reply:{reply.id}", "reply", sub, reply.lesson, reply.received_at, reply.risk)
        )
    marks = {
        m.item: (m, email)
        for m, email in session.execute(
            select(CareMark, Operator.email)
            .outerjoin(Operator, Operator.id == CareMark.operator_id)
            .where(CareMark.item.in_([f[0] for f in found]))
        ).all()
    }
    items = []
    for key, kind, sub, lesson, at, risk in found:
        mark_row, marked_by = marks.get(key, (None, None))
        status = mark_row.status if mark_row else "new"
        if not include_done and status != "new":
            continue
        items.append(
            CareItem(
                item=key,
                kind=kind,
                public_id=sub.public_id,
                reader=sub.name or sub.email,
                lesson=lesson,
                at=at,
                phrases=tuple(phrases.text_of(risk)),
                status=status,
                marked_by=marked_by,
                marked_at=mark_row.marked_at if mark_row else None,
            )
        )
    items.sort(key=lambda i: (not i.urgent, i.status != "new", -i.at.timestamp()))
    return items


def open_count(session: Session, now: datetime, phrases: RiskPhrases) -> int:
    """How many items wait for a first look (for the admin's navigation)."""
    return sum(1 for i in needs_a_look(session, now, phrases, include_done=False))


def mark(session: Session, item: str, status: str, operator_id: int, now: datetime) -> None:
    """Mark an item "seen" or "contacted" by this operator (a later mark replaces it)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    if not re.fullmatch(r"(checkin|note|reply):\d{1,12}", item):
        raise ValueError("not an item of the list")
    row = session.get(CareMark, item)
    if row is None:
        session.add(CareMark(item=item, status=status, operator_id=operator_id, marked_at=now))
    else:
        row.status, row.operator_id, row.marked_at = status, operator_id, now


def forget_old_marks(session: Session, now: datetime) -> int:
    """Delete sent alerts and marks older than the list's window: their items are off the
    list by then (the audit log keeps who marked what). Returns how many."""
    cutoff = now - WINDOW
    alerts = session.execute(
        delete(CareAlert)
        .where(CareAlert.sent_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    marks = session.execute(
        delete(CareMark)
        .where(CareMark.marked_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return int(alerts.rowcount or 0) + int(marks.rowcount or 0)  # type: ignore[attr-defined]


# -- alerts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertMail:
    """An alert email, already addressed (built here so the wording lives in one place)."""

    to: str
    message: bytes


def due_alert(
    session: Session,
    now: datetime,
    *,
    care_email: str,
    minutes: int,
    base_url: str,
    mail_from: str,
    practice_name: str,
) -> AlertMail | None:
    """The grouped alert to send now, or None: unsent alerts exist, and no alert went out in
    the last ``minutes``. Marks the alerts as sent (the caller commits after sending)."""
    if not care_email:
        return None
    waiting = list(session.scalars(select(CareAlert).where(CareAlert.sent_at.is_(None))))
    if not waiting:
        return None
    last = session.scalar(select(func.max(CareAlert.sent_at)))
    if last is not None and now - last < timedelta(minutes=minutes):
        return None
    session.execute(
        update(CareAlert).where(CareAlert.id.in_([a.id for a in waiting])).values(sent_at=now)
    )
    count = len(waiting)
    link = f"{base_url}/admin/care"
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = care_email
    message["Subject"] = (
        f"{practice_name}: {count} reader note{'s' if count != 1 else ''} need a look"
    )
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain="course.alert")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"{count} note{'s or replies' if count != 1 else ' or reply'} from readers of the course "
        "matched a risk phrase since the last alert.\n\n"
        f'Please look at them in the admin, under "Needs a look":\n{link}\n\n'
        "This email never contains what a reader wrote. It is sent at most every "
        f"{minutes} minutes; nobody else is alerted.\n"
    )
    return AlertMail(care_email, bytes(message))


def send_alerts(
    sessions: sessionmaker[Session], settings: Settings, transport: Transport, now: datetime
) -> int:
    """The scheduler's job: send the grouped alert if one is due; returns how many alerts
    it covered. The alerts are claimed (marked sent) first, so two senders never send the
    same alert twice; if the relay refuses the email, the claim is undone for the next run."""
    with sessions() as session, session.begin():
        mail = due_alert(
            session,
            now,
            care_email=settings.care_email,
            minutes=settings.care_alert_minutes,
            base_url=settings.base_url,
            mail_from=settings.mail_from,
            practice_name=settings.practice_name,
        )
        if mail is None:
            return 0
        covered = int(
            session.scalar(
                select(func.count()).select_from(CareAlert).where(CareAlert.sent_at == now)
            )
            or 0
        )
    try:
        with transport.open() as conn:
            conn.send(bounce_address(settings), envelope_address(mail.to), mail.message)
    except DeliveryError as exc:
        with sessions() as session, session.begin():
            session.execute(update(CareAlert).where(CareAlert.sent_at == now).values(sent_at=None))
        log.warning("care alert not sent, tried again on the next run: %s", exc)
        return 0
    log.info("care alert sent alerts=%s", covered)
    return covered
