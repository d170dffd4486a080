"""Operator accounts: the people at the practice who use the admin pages.

Passwords are hashed with Werkzeug's scrypt; there is no default account and no default
password. Functions take a session and never commit.
"""

from __future__ import annotations

from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from course.models import Operator

MIN_PASSWORD = 12

# Verifying against a real hash when the account does not exist keeps the response time
# the same, so login timing does not reveal which addresses have accounts.
_DUMMY_HASH = generate_password_hash("not-a-real-password-only-for-timing")


class OperatorError(ValueError):
    """An operator account cannot be created as asked."""


def create_operator(session: Session, email: str, password: str, timezone: str = "UTC") -> Operator:
    """Create an operator account, or raise :class:`OperatorError` with the reason."""
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise OperatorError(f"not a valid email address: {exc}") from None
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"the password must be at least {MIN_PASSWORD} characters")
    if find_operator(session, email) is not None:
        raise OperatorError(f"an operator with the address {email} already exists")
    operator = Operator(
        email=email, password_hash=generate_password_hash(password), timezone=timezone
    )
    session.add(operator)
    session.flush()
    return operator


def find_operator(session: Session, email: str) -> Operator | None:
    """The operator with this address (case-insensitive), if any."""
    return session.scalars(
        select(Operator).where(func.lower(Operator.email) == email.strip().lower())
    ).first()


def authenticate(session: Session, email: str, password: str, now: datetime) -> Operator | None:
    """The operator if the password is right, else None (in the same time either way)."""
    operator = find_operator(session, email)
    if operator is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(operator.password_hash, password):
        return None
    operator.last_login_at = now
    return operator


def end_sessions(session: Session, operator_id: int) -> None:
    """End every login session of this operator, on every browser ("sign out everywhere").

    Sessions carry the operator's ``session_version`` from when they were made; raising it
    (in SQL, so two logouts at once both count) makes every earlier session stale.
    """
    session.execute(
        update(Operator)
        .where(Operator.id == operator_id)
        .values(session_version=Operator.session_version + 1)
    )
