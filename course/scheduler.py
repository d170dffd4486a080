"""APScheduler wiring: a per-process ticker that runs the sending engine every few seconds.

APScheduler keeps only one interval job here, in its in-memory job store. The database
decides what is due; APScheduler 3.x job stores cannot be shared between processes, and
nothing needs them to be: any number of ``course scheduler`` processes can tick side by
side, sharing the work through row claims (see ``course.sending``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from course.care import forget_old_marks, send_alerts
from course.checks import check_content as check_templates_and_lessons
from course.checks import courses_at_start, log_content_problems
from course.config import Settings
from course.db import make_engine, make_sessionmaker
from course.mail import transport_from_url
from course.mailroom import check_all, mailboxes
from course.models import utcnow
from course.privacy import anonymize_former_readers, forget_old_writing, purge_pending
from course.sending import Sender
from course.signups import decide_signups

log = logging.getLogger("course.scheduler")


def build_sender(settings: Settings) -> Sender:
    """A sender wired to the configured database and mail transport."""
    # Each SMTP connection's thread holds one database connection for its hot path and
    # may open a second to record a failure; claims and heartbeats need one more. Sized
    # from the setting, so a large pool of SMTP connections never waits for the database.
    pool_size = 2 * settings.smtp_connections + 2
    engine = make_engine(
        settings.database_url, asynchronous_commit=True, pool_size=pool_size, max_overflow=4
    )
    transport = transport_from_url(settings.mail_url, ehlo_name=settings.ehlo_name)
    return Sender(settings, make_sessionmaker(engine), transport)


def check_content(sender: Sender, who: str) -> None:
    """Log every problem with the templates and lessons, naming the file."""
    courses = courses_at_start(sender.library, who)
    if courses is not None:
        log_content_problems(check_templates_and_lessons(sender.renderer, courses, utcnow()), who)


def run_tick(sender: Sender) -> None:
    """One tick, logged as one ``key=value`` line; errors are logged, never raised.

    Signup requests that no web process decided (it died right after answering) are
    decided first, so their confirmations go out in this same tick.
    """
    decide_signups(sender.sessions, sender.settings, clock=sender.clock)
    try:
        result = sender.tick()
    except Exception:
        log.exception("tick failed worker=%s", sender.worker)
        return
    log.info("tick worker=%s %s", sender.worker, result.log_line())


def run_housekeeping(sender: Sender) -> int:
    """Keep data no longer than promised (hourly; docs/privacy.md): delete signups never
    confirmed, anonymise former readers, delete old notes and replies. Returns how many
    unconfirmed signups were deleted."""
    settings = sender.settings
    now = sender.clock()
    try:
        with sender.sessions() as session, session.begin():
            purged = purge_pending(session, now, settings.pending_retention_days)
            anonymized = anonymize_former_readers(
                session, now, settings.retention_months, settings.secret_keys
            )
            forgotten = forget_old_writing(session, now, settings.note_retention_days)
            forget_old_marks(session, now)
    except Exception:
        log.exception("housekeeping failed worker=%s", sender.worker)
        return 0
    log.info(
        "housekeeping worker=%s purged_pending=%d anonymized=%d notes_deleted=%d",
        sender.worker,
        purged,
        anonymized,
        forgotten,
    )
    return purged


def run_care_alerts(sender: Sender) -> None:
    """Send the grouped alert about risk phrases to COURSE_CARE_EMAIL, if one is due."""
    try:
        send_alerts(sender.sessions, sender.settings, sender.transport, sender.clock())
    except Exception:
        log.exception("care alert failed worker=%s", sender.worker)


def run_mailboxes(sender: Sender) -> None:
    """Read the bounce and replies mailboxes (course.mailroom); errors are logged."""
    try:
        results = check_all(sender.sessions, sender.settings, sender.clock)
    except Exception:
        log.exception("mailboxes failed worker=%s", sender.worker)
        return
    for source, outcome in results.items():
        counts = (
            outcome
            if isinstance(outcome, str)
            else " ".join(f"{k}={v}" for k, v in sorted(outcome.items()))
        )
        log.info("mailbox=%s worker=%s %s", source, sender.worker, counts or "empty")


def _add_job(scheduler: BaseScheduler, sender: Sender, settings: Settings) -> None:
    scheduler.add_job(
        run_tick,
        "interval",
        args=[sender],
        seconds=settings.tick_seconds,
        id="course-tick",
        next_run_time=datetime.now(utcnow().tzinfo),  # first tick right away
        max_instances=1,  # a long tick is never overlapped by the next one
        coalesce=True,  # ticks missed while busy collapse into one
        misfire_grace_time=None,
    )
    if settings.care_email:
        scheduler.add_job(
            run_care_alerts,
            "interval",
            args=[sender],
            # As often as mail is sent: one small query; the grouping is in send_alerts.
            seconds=settings.tick_seconds,
            id="course-care-alerts",
            next_run_time=datetime.now(utcnow().tzinfo),
            max_instances=1,
            coalesce=True,
        )
    if mailboxes(settings):
        # Several senders may read the same mailbox: each message's fingerprint is
        # committed with its effect, so none is applied twice.
        scheduler.add_job(
            run_mailboxes,
            "interval",
            args=[sender],
            minutes=settings.mailbox_check_minutes,
            id="course-mailboxes",
            next_run_time=datetime.now(utcnow().tzinfo),
            max_instances=1,
            coalesce=True,
        )
    # Every sender runs it; the DELETE is idempotent, so several at once do no harm.
    scheduler.add_job(
        run_housekeeping,
        "interval",
        args=[sender],
        hours=1,
        id="course-housekeeping",
        next_run_time=datetime.now(utcnow().tzinfo),
        max_instances=1,
        coalesce=True,
    )


def start_background(settings: Settings) -> tuple[BackgroundScheduler, Sender]:
    """Start ticking in a background thread (``course run`` in development)."""
    sender = build_sender(settings)
    check_content(sender, "scheduler")
    scheduler = BackgroundScheduler(timezone="UTC")
    _add_job(scheduler, sender, settings)
    scheduler.start()
    return scheduler, sender


def stop_background(scheduler: BackgroundScheduler, sender: Sender) -> None:
    """Finish the message in flight, hand back other claims, stop."""
    sender.stopping.set()
    scheduler.shutdown(wait=True)
    sender.release_claims()


def run_forever(settings: Settings) -> None:
    """``course scheduler``: tick until SIGTERM or SIGINT, then stop cleanly.

    On a signal the sender finishes the message in flight, releases its remaining claims
    so another sender can take them at once, and the process exits.
    """
    sender = build_sender(settings)
    check_content(sender, "scheduler")
    scheduler = BlockingScheduler(timezone="UTC")
    _add_job(scheduler, sender, settings)

    stopper = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True})

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, finishing the message in flight", signal.Signals(signum).name)
        sender.stopping.set()
        # shutdown() waits for the running tick; run it off the signal handler's frame.
        if not stopper.is_alive() and stopper.ident is None:
            stopper.start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("scheduler started worker=%s tick_seconds=%s", sender.worker, settings.tick_seconds)
    scheduler.start()
    if stopper.ident is not None:
        stopper.join()  # the main loop ends before the running tick does: wait for it
    released = sender.release_claims()
    log.info("scheduler stopped worker=%s released=%d", sender.worker, released)


#: How long a supervisor waits before starting a sender process again that died.
RESTART_DELAY_SECONDS = 1.0


def _sender_process(settings: Settings) -> None:
    """One child of :func:`run_processes` (a new interpreter: it sets up its own logs)."""
    from course.logs import configure_logging

    configure_logging(settings.log_level)
    parent = os.getppid()

    def watch_parent() -> None:
        # A supervisor killed outright (SIGKILL, OOM) cannot pass SIGTERM on: its children
        # stop by themselves, cleanly, or a restarted service would run twice as many.
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("the supervisor is gone; stopping this sender")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, name="watch-supervisor", daemon=True).start()
    run_forever(settings)


def run_processes(settings: Settings, processes: int) -> None:
    """``course scheduler --processes N``: N sender processes and this one to watch them.

    Each child is a whole ``course scheduler`` (its own sender, database connections and
    SMTP connections); they share the work through the deliveries' claims, exactly as
    separate ``course scheduler`` services would, so nothing about the delivery guarantee
    changes. Python runs one thread of Python code at a time per process, so processes,
    not more connections, are what use more cores (docs/architecture.md, "How many
    senders"). A child that dies is started again; SIGTERM or SIGINT is passed on to every
    child, which finishes its message in flight and hands back its claims, and this process
    exits when they all have.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited connections or threads
    stopping = threading.Event()

    def start() -> multiprocessing.process.BaseProcess:
        child = context.Process(target=_sender_process, args=(settings,), daemon=False)
        child.start()
        return child

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "received %s, stopping %d sender processes", signal.Signals(signum).name, processes
        )
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    children = [start() for _ in range(processes)]
    log.info(
        "scheduler supervisor started processes=%d pids=%s", processes, [c.pid for c in children]
    )
    while not stopping.is_set():
        for i, child in enumerate(children):
            if not child.is_alive() and not stopping.is_set():
                log.error(
                    "sender process pid=%s exited with %s; starting another",
                    child.pid,
                    child.exitcode,
                )
                stopping.wait(RESTART_DELAY_SECONDS)
                if not stopping.is_set():
                    children[i] = start()
        stopping.wait(0.5)
    for child in children:
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join()
    log.info("scheduler supervisor stopped")
