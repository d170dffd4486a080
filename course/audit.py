"""The audit log: who at the practice read a reader's private words, and who changed staff.

Readers' notes and replies are health-adjacent data (GDPR Art. 9). Every time a person at
the practice is shown them, a row says who, what kind of view, about which reader, and
when: a reader's admin page (for a role that sees notes, when it had notes or replies to
show), the "Needs a look" list, an export of a reader's data. Changes to staff accounts
(created, role changed, two-factor reset, removed), sign-ins and a marked care item are
recorded too. Owners read the log in the admin (newest first).

A row never holds what a reader wrote; ``detail`` is a short fact written by the code
(a role, an item id). Rows are never changed or deleted by the app: a reader's erasure
clears ``subscriber_id`` (the database does, ON DELETE SET NULL) and keeps the row, and the
operator's id stays after their account is removed. Functions take a session and never
commit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from course.models import AuditLog, Operator, Subscriber


class Action(enum.StrEnum):
    VIEW_NOTES = "view_notes"  # a reader's page with their notes or replies
    VIEW_CARE = "view_care"  # the "Needs a look" list
    EXPORT = "export"  # a reader's data, notes and replies included
    CARE_MARK = "care_mark"  # an item of the list marked seen / contacted
    SIGN_IN = "sign_in"  # detail: "password", "password+code" or "password+recovery code"
    TOTP_ENROL = "totp_enrol"  # two-factor sign-in set up by the operator
    STAFF_CREATE = "staff_create"
    STAFF_ROLE = "staff_role"
    STAFF_RESET_2FA = "staff_reset_2fa"
    STAFF_REMOVE = "staff_remove"

    @property
    def label(self) -> str:
        return {
            "view_notes": "Read a reader's notes and replies",
            "view_care": "Opened “Needs a look”",
            "export": "Exported a reader's data",
            "care_mark": "Marked a care item",
            "sign_in": "Signed in",
            "totp_enrol": "Set up two-factor sign-in",
            "staff_create": "Created a staff account",
            "staff_role": "Changed a staff role",
            "staff_reset_2fa": "Reset a staff member's two-factor sign-in",
            "staff_remove": "Removed a staff account",
        }[self.value]


def record(
    session: Session,
    operator_id: int,
    action: Action | str,
    subscriber_id: int | None,
    now: datetime,
    *,
    detail: str | None = None,
) -> AuditLog:
    """Add one row to the audit log (in the caller's transaction)."""
    row = AuditLog(
        operator_id=operator_id,
        action=Action(action).value,
        subscriber_id=subscriber_id,
        detail=detail[:200] if detail else None,
        created_at=now,
    )
    session.add(row)
    return row


@dataclass(frozen=True)
class AuditEntry:
    """One row of the log, as owners see it."""

    at: datetime
    action: str
    label: str
    operator_id: int
    operator: str | None  # their address; None once the account was removed
    public_id: str | None  # the reader's, for a link; None after an erasure
    reader: str | None
    erased: bool  # the row named a reader who was erased since
    detail: str | None


def entries(session: Session, page: int, per_page: int = 50) -> tuple[list[AuditEntry], int]:
    """One page of the log, newest first, and how many rows there are in all."""
    total = int(session.scalar(select(func.count()).select_from(AuditLog)) or 0)
    rows = session.execute(
        select(AuditLog, Operator.email, Subscriber.public_id, Subscriber.name, Subscriber.email)
        .outerjoin(Operator, Operator.id == AuditLog.operator_id)
        .outerjoin(Subscriber, Subscriber.id == AuditLog.subscriber_id)
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        .limit(per_page)
        .offset((max(page, 1) - 1) * per_page)
    ).all()
    found = []
    for row, operator, public_id, name, email in rows:
        try:
            label = Action(row.action).label
        except ValueError:
            label = row.action
        found.append(
            AuditEntry(
                at=row.created_at,
                action=row.action,
                label=label,
                operator_id=row.operator_id,
                operator=operator,
                public_id=public_id,
                reader=(name or email) if public_id else None,
                erased=public_id is None and _names_a_reader(row.action),
                detail=row.detail,
            )
        )
    return found, total


def _names_a_reader(action: str) -> bool:
    return action in (Action.VIEW_NOTES, Action.EXPORT, Action.CARE_MARK)


def for_subscriber(session: Session, subscriber_id: int) -> list[AuditLog]:
    """Every row about one reader, oldest first (for a reader's access request)."""
    return list(
        session.scalars(
            select(AuditLog).where(AuditLog.subscriber_id == subscriber_id).order_by(AuditLog.id)
        )
    )
