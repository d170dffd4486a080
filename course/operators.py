"""Operator accounts: the people at the practice who use the admin pages.

Passwords are hashed with Werkzeug's scrypt; there is no default account and no default
password. Functions take a session and never commit.

**Roles** (:class:`Role`), each including everything of the ones below it:

- ``assistant``: subscribers (search, their timeline without notes or replies, pause,
  resume, unsubscribe, re-send, retry, erase), lessons (preview, send a test) and the
  dashboard. Never a reader's note or reply, nor the "Needs a look" list.
- ``therapist``: also readers' notes and replies, the "Needs a look" list (and marking its
  items), and a reader's data export (which contains their notes).
- ``owner``: also staff accounts (create, change a role, reset two-factor sign-in, remove)
  and the audit log. The practice always keeps at least one owner: the last one can
  neither be demoted nor removed.

The first account is an owner unless told otherwise; every later one must be given a role
(:func:`create_operator`), so nobody gets more than they were meant to by accident.

**Two-factor sign-in** (TOTP, RFC 6238, with ``pyotp``): the secret is stored encrypted with
the data keys (``EncryptedText``, as notes are). A code is accepted for the current 30-second
step and one step either side (clocks drift), and each step only once: the last accepted step
is kept and a code must be for a later one (checked and stored in one UPDATE, so two requests
with the same code cannot both pass). Ten single-use recovery codes are made at enrolment,
shown once and stored only as password hashes; using one removes it (again in one
conditional UPDATE).
"""

from __future__ import annotations

import enum
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from datetime import datetime

import pyotp
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from course.models import Operator

MIN_PASSWORD = 12

# Verifying against a real hash when the account does not exist keeps the response time
# the same, so login timing does not reveal which addresses have accounts.
_DUMMY_HASH = generate_password_hash("not-a-real-password-only-for-timing")


class OperatorError(ValueError):
    """An operator account cannot be created or changed as asked."""


class Role(enum.StrEnum):
    """What a staff member may do; each role includes the ones below it."""

    OWNER = "owner"
    THERAPIST = "therapist"
    ASSISTANT = "assistant"

    @property
    def rank(self) -> int:
        return {"assistant": 1, "therapist": 2, "owner": 3}[self.value]

    def includes(self, other: Role) -> bool:
        """Whether this role may do what ``other`` may."""
        return self.rank >= other.rank

    @property
    def reads_notes(self) -> bool:
        """Whether this role sees readers' notes and replies."""
        return self.includes(Role.THERAPIST)

    @property
    def label(self) -> str:
        return self.value.capitalize()

    @classmethod
    def parse(cls, value: object) -> Role | None:
        """The role named ``value``, or None (an unknown value grants nothing)."""
        try:
            return cls(str(value))
        except ValueError:
            return None


def role_of(operator: Operator) -> Role:
    """The operator's role; a value the code does not know counts as the least one."""
    return Role.parse(operator.role) or Role.ASSISTANT


def create_operator(
    session: Session,
    email: str,
    password: str,
    timezone: str = "UTC",
    role: Role | str | None = None,
) -> Operator:
    """Create an operator account, or raise :class:`OperatorError` with the reason.

    Without ``role`` the first account is an owner, and any later one is refused.
    """
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise OperatorError(f"not a valid email address: {exc}") from None
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"the password must be at least {MIN_PASSWORD} characters")
    if find_operator(session, email) is not None:
        raise OperatorError(f"an operator with the address {email} already exists")
    chosen = default_role(session) if role is None else Role.parse(role)
    if chosen is None:
        raise OperatorError(
            "name a role (owner, therapist or assistant): only the first account is an "
            "owner without being told"
        )
    operator = Operator(
        email=email,
        password_hash=generate_password_hash(password),
        timezone=timezone,
        role=chosen.value,
    )
    session.add(operator)
    session.flush()
    return operator


def default_role(session: Session) -> Role | None:
    """The role of an account created without one: owner for the first, else none."""
    count = session.scalar(select(func.count()).select_from(Operator)) or 0
    return Role.OWNER if count == 0 else None


def find_operator(session: Session, email: str) -> Operator | None:
    """The operator with this address (case-insensitive), if any."""
    return session.scalars(
        select(Operator).where(func.lower(Operator.email) == email.strip().lower())
    ).first()


def staff(session: Session) -> Sequence[Operator]:
    """Every operator account, by address."""
    return session.scalars(select(Operator).order_by(func.lower(Operator.email))).all()


def authenticate(session: Session, email: str, password: str) -> Operator | None:
    """The operator if the password is right, else None (in the same time either way).

    A right password is only the first step for an operator with two-factor sign-in;
    :func:`signed_in` records a completed sign-in.
    """
    operator = find_operator(session, email)
    if operator is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(operator.password_hash, password):
        return None
    return operator


def signed_in(session: Session, operator_id: int, now: datetime) -> None:
    """Record a completed sign-in (every factor it needed)."""
    session.execute(update(Operator).where(Operator.id == operator_id).values(last_login_at=now))


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


# -- roles ----------------------------------------------------------------------------------


def _owner_ids(session: Session) -> list[int]:
    """The owners' ids, locked until the end of the transaction (PostgreSQL: FOR UPDATE;
    SQLite's write transactions are serial anyway), so two owners demoting each other at
    the same moment cannot leave the practice without one."""
    return list(
        session.scalars(
            select(Operator.id).where(Operator.role == Role.OWNER.value).with_for_update()
        )
    )


def _get(session: Session, operator_id: int) -> Operator:
    operator = session.get(Operator, operator_id)
    if operator is None:
        raise OperatorError("there is no such staff account")
    return operator


def set_role(session: Session, operator_id: int, role: Role | str) -> Operator:
    """Give an operator another role; never demotes the last owner."""
    chosen = Role.parse(role)
    if chosen is None:
        raise OperatorError("the role must be owner, therapist or assistant")
    owners = _owner_ids(session)
    operator = _get(session, operator_id)
    if chosen is not Role.OWNER and owners == [operator.id]:
        raise OperatorError(
            "the practice needs an owner: make someone else an owner before changing this role"
        )
    operator.role = chosen.value
    return operator


def remove_operator(session: Session, operator_id: int) -> str:
    """Delete a staff account (their sessions end with it); returns its address. Never
    removes the last owner. What they did stays recorded under their id."""
    owners = _owner_ids(session)
    operator = _get(session, operator_id)
    if owners == [operator.id]:
        raise OperatorError(
            "the practice needs an owner: make someone else an owner before removing this one"
        )
    email = operator.email
    session.delete(operator)
    session.flush()
    return email


# -- two-factor sign-in ---------------------------------------------------------------------

#: Steps either side of now whose code is still accepted (clock drift, typing time).
TOTP_WINDOW = 1
RECOVERY_CODES = 10
#: No 0/o, 1/i/l: recovery codes are read off paper. 10 characters: about 50 bits.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_SHAPE = re.compile(rf"[{_RECOVERY_ALPHABET}]{{10}}")
_TOTP_SHAPE = re.compile(r"[0-9]{6}")
#: Recovery codes are random (about 50 bits), not chosen by a person, so a lighter scrypt
#: than for passwords still makes a leaked hash useless, and checking all ten stays quick.
_RECOVERY_HASH = "scrypt:8192:8:1"


class SecondFactor(enum.StrEnum):
    """How the second step of a sign-in was passed."""

    CODE = "code"
    RECOVERY_CODE = "recovery code"


def new_totp_secret() -> str:
    """A new shared secret (160 bits, base32, as authenticator apps expect)."""
    return pyotp.random_base32()


def totp_uri(secret: str, email: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def normalise_code(typed: str) -> str:
    """A typed code without spaces or dashes, lower-cased ("123 456", "ABCDE-FGHJK")."""
    return re.sub(r"[\s-]", "", typed or "")[:64].lower()


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step within the window whose code is ``code``, if any."""
    if not _TOTP_SHAPE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step  # no early exit: the same work whatever matched
    return found


def new_recovery_code() -> str:
    """A recovery code as shown to the operator: ``abcde-fghjk``."""
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def enable_totp(
    session: Session, operator_id: int, secret: str, typed: str, now: datetime
) -> list[str] | None:
    """Turn on two-factor sign-in with ``secret`` if ``typed`` is its current code.

    Returns the new recovery codes (to show once), or None if the code is wrong or the
    operator already has two-factor sign-in.
    """
    step = _matching_step(secret, normalise_code(typed), now)
    if step is None:
        return None
    codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
    hashes = [generate_password_hash(normalise_code(c), method=_RECOVERY_HASH) for c in codes]
    result = session.execute(
        update(Operator)
        .where(Operator.id == operator_id, Operator.totp_enabled_at.is_(None))
        .values(
            totp_secret=secret,
            totp_enabled_at=now,
            totp_last_step=step,  # the code just typed cannot sign in
            recovery_codes=json.dumps(hashes),
        )
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return codes


def check_second_factor(
    session: Session, operator_id: int, typed: str, now: datetime
) -> SecondFactor | None:
    """Whether ``typed`` is a valid, unused code or recovery code of this operator.

    A code is used up in the same statement that checks it has not been used: of two
    requests with the same code, one passes.
    """
    code = normalise_code(typed)
    operator = session.get(Operator, operator_id)
    if operator is None or operator.totp_enabled_at is None or not operator.totp_secret:
        return None
    if _TOTP_SHAPE.fullmatch(code):
        step = _matching_step(operator.totp_secret, code, now)
        if step is None:
            return None
        result = session.execute(
            update(Operator)
            .where(
                Operator.id == operator_id,
                or_(Operator.totp_last_step.is_(None), Operator.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return SecondFactor.CODE if result.rowcount == 1 else None  # type: ignore[attr-defined]
    if _RECOVERY_SHAPE.fullmatch(code):
        stored = operator.recovery_codes
        hashes: list[str] = json.loads(stored) if stored else []
        for index, hashed in enumerate(hashes):
            if check_password_hash(hashed, code):
                rest = hashes[:index] + hashes[index + 1 :]
                result = session.execute(
                    update(Operator)
                    .where(Operator.id == operator_id, Operator.recovery_codes == stored)
                    .values(recovery_codes=json.dumps(rest))
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    return SecondFactor.RECOVERY_CODE
                return None
    return None


def recovery_codes_left(operator: Operator) -> int:
    """How many unused recovery codes the operator has."""
    return len(json.loads(operator.recovery_codes)) if operator.recovery_codes else 0


def reset_totp(session: Session, operator_id: int) -> None:
    """Turn off an operator's two-factor sign-in (a lost phone) and end their sessions;
    they set it up again at their next sign-in if the practice requires it."""
    session.execute(
        update(Operator)
        .where(Operator.id == operator_id)
        .values(totp_secret=None, totp_enabled_at=None, totp_last_step=None, recovery_codes=None)
        .execution_options(synchronize_session=False)
    )
    end_sessions(session, operator_id)
