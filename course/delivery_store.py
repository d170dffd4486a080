"""The sending engine's hot path in SQL: the few statements run for every message, one
store per database.

Everything else in the project goes through SQLAlchemy's ORM or Core. These statements are
the same SQLAlchemy statements, compiled once per database, and run on the driver's own
connection: SQLAlchemy's work per execution (parameter processing, result set-up, events)
cost four times the statements themselves on SQLite, and one round trip per statement cost
most of the rest on PostgreSQL (docs/benchmarks.md). So:

- :class:`SqliteStore` runs them through :mod:`sqlite3`, which prepares each statement once
  per connection and caches it. No round trips: SQLite is in the process.
- :class:`PostgresStore` runs them through psycopg as prepared statements in pipeline mode:
  a statement whose result nobody reads is sent without waiting, so recording message k,
  committing, and checking and locking message k+1 cost one round trip together.

A store only runs statements; which ones, in which transactions, is the sender's business
(course.sending). Transactions are explicit: ``begin()`` ... ``commit()``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Dialect, Engine, bindparam, func, select, update
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from course.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus, UTCDateTime
from course.subscriptions import upsert_lesson

log = logging.getLogger("course.sending")


class Check(NamedTuple):
    """A claimed delivery as it stands right before its send."""

    status: str
    claimed_by: str | None
    subscriber_status: str | None  # None: the reader was erased


_CHECK = (
    select(Delivery.status, Delivery.claimed_by, Subscriber.status)
    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
    .where(Delivery.id == bindparam("did"))
)
# PostgreSQL locks through the send, in one statement: the reader (FOR SHARE: an
# unsubscribe, a pause or an erasure waits for the message in flight), then the delivery
# (no other sender takes it). PostgreSQL takes the locks in the order of the clauses, so
# the reader's first: the order the web's changes take too, so the two cannot deadlock
# (tests/test_delivery_store.py shows the order).
_LOCK = (
    select(Delivery.status, Delivery.claimed_by, Subscriber.status)
    .select_from(Subscriber)
    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
    .where(Delivery.id == bindparam("did"))
    .with_for_update(of=[Subscriber], read=True)
    .suffix_with("FOR NO KEY UPDATE OF deliveries")
)
_CANCEL = (
    update(Delivery)
    .where(Delivery.id == bindparam("did"))
    .values(status=DeliveryStatus.CANCELLED, claimed_by=None)
)
_RENEW = update(Delivery).where(Delivery.id == bindparam("did")).values(due_at=bindparam("due"))
_SENT_VALUES: dict[str, Any] = {
    "status": DeliveryStatus.SENT,
    # The first time it reached the reader; an operator's re-send keeps that date.
    "sent_at": func.coalesce(Delivery.sent_at, bindparam("now", type_=UTCDateTime)),
    "claimed_by": None,
}
_MARK_SENT = (
    update(Delivery)
    .where(Delivery.id == bindparam("did"))
    .values(**_SENT_VALUES, attempts=Delivery.attempts + 1, last_error=None)
)
#: The same, keeping ``last_error`` and ``attempts``: a delivery counted as sent that the
#: relay never acknowledged keeps saying so (its attempts were counted as it went).
_MARK_SENT_NOTED = update(Delivery).where(Delivery.id == bindparam("did")).values(**_SENT_VALUES)
_COMPLETE = (
    update(Subscriber)
    .where(Subscriber.id == bindparam("sid"), Subscriber.status == SubscriberStatus.ACTIVE)
    .values(status=SubscriberStatus.COMPLETED, completed_at=bindparam("now"))
)
_READER_STATUS = select(Subscriber.status).where(Subscriber.id == bindparam("sid"))


@dataclass(frozen=True)
class Compiled:
    """A statement compiled once for one database, with what its parameters need: the
    constants SQLAlchemy bound in it, the column defaults it would fill in, and the type
    conversions (a time on SQLite is text in SQLAlchemy's format)."""

    sql: str
    positions: tuple[str, ...] | None  # the parameters' order, for "?" placeholders
    constants: dict[str, Any]
    convert: tuple[tuple[str, Callable[[Any], Any]], ...]

    @classmethod
    def of(
        cls, statement: ClauseElement, dialect: Dialect, defaults_of: ClauseElement | None = None
    ) -> Compiled:
        """Compile ``statement`` for ``dialect``. ``defaults_of``: the INSERT whose column
        defaults it needs (SQLAlchemy does not report them for an INSERT with a CTE)."""
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        plain = compiled if defaults_of is None else defaults_of.compile(dialect=dialect)
        assert isinstance(plain, SQLCompiler)
        # What SQLAlchemy bound itself (a status, a NULL, a 0); the rest come per call.
        constants = {
            k: _plain(v) for k, v in compiled.params.items() if not compiled.binds[k].required
        }
        for column in (*plain.insert_prefetch, *plain.update_prefetch):
            default = column.default
            if default is None or not getattr(default, "is_scalar", False):
                raise ValueError(f"{column} needs a scalar default to run on the hot path")
            constants[column.key] = _plain(default.arg)  # type: ignore[attr-defined]
        convert = []
        for name, bind in compiled.binds.items():
            processor = bind.type.bind_processor(dialect)
            if processor is not None and name in compiled.params:
                convert.append((name, processor))
        positions = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        return cls(compiled.string, positions, constants, tuple(convert))

    def params(self, values: dict[str, Any]) -> Any:
        """The driver's parameters for ``values`` (a tuple or a dict, as the driver wants)."""
        merged = {**self.constants, **values}
        for name, processor in self.convert:
            merged[name] = processor(merged.get(name))
        if self.positions is None:
            return merged
        return tuple(merged[name] for name in self.positions)


def _plain(value: Any) -> Any:
    # Drivers take str, not our StrEnum members.
    return value.value if isinstance(value, str) and hasattr(value, "value") else value


class DeliveryStore(ABC):
    """The hot-path statements on one database connection, taken from the engine's pool
    for one batch (``close()`` gives it back). One subclass per database."""

    #: Whether a check locks the reader and the delivery until the transaction ends (so the
    #: lock can be held through the send).
    locks: bool = False

    def __init__(self, engine: Engine) -> None:
        self._pooled = engine.pool.connect()
        self._raw: Any = self._pooled.driver_connection
        self._statements = _compiled_for(engine.dialect)

    @abstractmethod
    def _run(self, name: str, values: dict[str, Any]) -> Any:
        raise NotImplementedError

    @abstractmethod
    def begin(self) -> None:
        """Start a transaction (on SQLite: take the write lock now)."""
        raise NotImplementedError

    @abstractmethod
    def commit(self) -> None:
        """Commit the transaction."""
        raise NotImplementedError

    @abstractmethod
    def rollback(self) -> None:
        """Roll the transaction back (and let go of its locks)."""
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until everything sent so far has run (before other connections write the
        same rows: the pipeline's COMMIT must have let go of the locks). Nothing to wait
        for where each statement runs when it is called."""
        return None  # a hook: only the pipelining store has something to do

    @abstractmethod
    def check(self, delivery_id: int) -> Check | None:
        """The delivery and its reader's status, or None when the delivery is gone."""
        raise NotImplementedError

    @abstractmethod
    def reader_status(self, subscriber_id: int) -> str | None:
        """The reader's status now (None: erased)."""
        raise NotImplementedError

    def renew(self, delivery_id: int, due: datetime) -> None:
        """Extend the claim's lease to ``due``."""
        self._run("renew", {"did": delivery_id, "due": due})

    def cancel(self, delivery_id: int) -> None:
        """Cancel the delivery (the reader may no longer receive it)."""
        self._run("cancel", {"did": delivery_id})

    def mark_sent(self, delivery_id: int, now: datetime, *, keep_error: bool = False) -> None:
        """Record the relay's acceptance (an earlier ``sent_at`` is kept)."""
        self._run("sent_noted" if keep_error else "sent", {"did": delivery_id, "now": now})

    def queue(self, params: dict[str, object]) -> None:
        """Queue (or hold) an email: course.subscriptions.upsert_lesson's parameters."""
        self._run("queue", params)

    def sent_and_queue(self, delivery_id: int, now: datetime, params: dict[str, object]) -> None:
        """:meth:`mark_sent` and :meth:`queue` the next lesson (the common case)."""
        self.mark_sent(delivery_id, now)
        self.queue(params)

    @abstractmethod
    def complete(self, subscriber_id: int, now: datetime) -> bool:
        """Mark an active reader's course completed; whether this call did it."""
        raise NotImplementedError

    def close(self) -> None:
        """Give the connection back to the pool (rolling back anything left open)."""
        self._pooled.close()


def _compiled_for(dialect: Dialect) -> dict[str, Compiled]:
    upsert = upsert_lesson(dialect.name)
    statements: dict[str, ClauseElement] = {
        "check": _CHECK,
        "lock": _LOCK,
        "reader_status": _READER_STATUS,
        "renew": _RENEW,
        "cancel": _CANCEL,
        "sent": _MARK_SENT,
        "sent_noted": _MARK_SENT_NOTED,
        "queue": upsert,
        "complete": _COMPLETE,
    }
    compiled = {name: Compiled.of(stmt, dialect) for name, stmt in statements.items()}
    if dialect.name == "postgresql":
        # Record the send and queue the next lesson in one statement (a data-modifying
        # CTE, which SQLite does not have).
        both = upsert.add_cte(_MARK_SENT.cte("sent"))
        compiled["sent_queue"] = Compiled.of(both, dialect, defaults_of=upsert)
    return compiled


class SqliteStore(DeliveryStore):
    """SQLite through :mod:`sqlite3` (its connections here are in autocommit mode, see
    course.db, so transactions are the explicit BEGIN IMMEDIATE and COMMIT)."""

    def _run(self, name: str, values: dict[str, Any]) -> Any:
        statement = self._statements[name]
        return self._raw.execute(statement.sql, statement.params(values))

    def begin(self) -> None:
        self._raw.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._raw.execute("COMMIT")

    def rollback(self) -> None:
        if self._raw.in_transaction:
            self._raw.execute("ROLLBACK")

    def check(self, delivery_id: int) -> Check | None:
        row = self._run("check", {"did": delivery_id}).fetchone()
        return None if row is None else Check(*row)

    def reader_status(self, subscriber_id: int) -> str | None:
        row = self._run("reader_status", {"sid": subscriber_id}).fetchone()
        return None if row is None else str(row[0])

    def complete(self, subscriber_id: int, now: datetime) -> bool:
        return bool(self._run("complete", {"sid": subscriber_id, "now": now}).rowcount)


class PostgresStore(DeliveryStore):
    """PostgreSQL through psycopg: prepared statements in pipeline mode, with BEGIN and
    COMMIT sent as statements (autocommit on) so that they join the pipeline too.

    A statement's error surfaces when a later result is read (or at ``close``); the
    sender then rolls back and treats the whole group as failed.
    """

    locks = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._raw.autocommit = True
        self._pipelined = self._raw.pipeline()
        self._pipeline = self._pipelined.__enter__()
        self._cursor = self._raw.cursor()

    def _run(self, name: str, values: dict[str, Any]) -> Any:
        statement = self._statements[name]
        return self._cursor.execute(statement.sql, statement.params(values), prepare=True)

    def _send(self, name: str, values: dict[str, Any]) -> Any:
        """Send a statement whose result will be read; returns its cursor (in pipeline mode
        a shared cursor would hold only the last result)."""
        statement = self._statements[name]
        cursor = self._raw.cursor()
        cursor.execute(statement.sql, statement.params(values), prepare=True)
        return cursor

    def begin(self) -> None:
        self._cursor.execute("BEGIN")

    def commit(self) -> None:
        self._cursor.execute("COMMIT")

    def rollback(self) -> None:
        try:
            self._pipeline.sync()
        except Exception:  # the error being rolled back, or one queued after it
            pass
        self._cursor.execute("ROLLBACK")
        self._pipeline.sync()

    def settle(self) -> None:
        self._pipeline.sync()

    def check(self, delivery_id: int) -> Check | None:
        # Waits for everything sent before it (a record, COMMIT, BEGIN): one round trip.
        row = self._send("lock", {"did": delivery_id}).fetchone()
        return None if row is None else Check(*row)

    def sent_and_queue(self, delivery_id: int, now: datetime, params: dict[str, object]) -> None:
        self._run("sent_queue", {**params, "did": delivery_id, "now": now})

    def reader_status(self, subscriber_id: int) -> str | None:
        row = self._send("reader_status", {"sid": subscriber_id}).fetchone()
        return None if row is None else str(row[0])

    def complete(self, subscriber_id: int, now: datetime) -> bool:
        statement = self._statements["complete"]
        cursor = self._raw.cursor()
        cursor.execute(statement.sql, statement.params({"sid": subscriber_id, "now": now}))
        self._pipeline.sync()
        return bool(cursor.rowcount)

    def close(self) -> None:
        try:
            # The last record of a batch is committed here, when the pipeline ends.
            self._pipelined.__exit__(None, None, None)
            if self._raw.info.transaction_status:  # not idle: something was left open
                self._raw.execute("ROLLBACK")
            self._raw.autocommit = False
        except Exception:
            # Like a crash after the send: that message is sent again once its lease ends,
            # with the same Message-ID. The connection is not used again.
            log.exception("the sender's last record could not be committed")
            self._pooled.invalidate()
        finally:
            super().close()


def store_for(engine: Engine) -> DeliveryStore:
    """A store for the engine's database, on a connection from its pool."""
    if engine.dialect.name == "postgresql":
        return PostgresStore(engine)
    if engine.dialect.name == "sqlite":
        return SqliteStore(engine)
    raise ValueError(f"no delivery store for {engine.dialect.name}")
