"""How a reader's timeline reads in the admin: one plain sentence for each kind of event,
in the staff member's language, instead of the stored codes ("link_scan · lesson 1")."""

from __future__ import annotations

from collections.abc import Callable

from course.i18n import N_
from course.models import Event, EventKind

#: One sentence per kind; ``%(lesson)s``, ``%(value)s`` and ``%(run)s`` are filled in.
_SENTENCES: dict[str, str] = {
    EventKind.CONFIRM: N_("Confirmed and started the course (run %(run)s)"),
    EventKind.DONE: N_("Marked lesson %(lesson)s as done"),
    EventKind.CHECKIN: N_("Checked in on lesson %(lesson)s: %(value)s"),
    EventKind.NOTE: N_("Wrote a note on lesson %(lesson)s"),
    EventKind.PAUSE: N_("Paused the course"),
    EventKind.RESUME: N_("Resumed the course"),
    EventKind.UNSUBSCRIBE: N_("Unsubscribed"),
    EventKind.BOOK: N_("Clicked “Book a session” in lesson %(lesson)s"),
    EventKind.VIEW: N_("Read lesson %(lesson)s in the browser"),
    EventKind.SCHEDULE: N_("Changed the send hour or time zone"),
    EventKind.LINK_SCAN: N_(
        "A mail scanner opened the links of lesson %(lesson)s (its clicks were not counted)"
    ),
    EventKind.RESEND: N_("Lesson %(lesson)s was sent again"),
    EventKind.EXPORT: N_("Their data was exported"),
    EventKind.ERASE: N_("Erased"),
    EventKind.BOUNCE: N_("Mail bounced (%(value)s)"),
    EventKind.COMPLAINT: N_("Marked a message as spam"),
    EventKind.REPLY: N_("Replied by email"),
    EventKind.AUTO_REPLY: N_("An automatic reply arrived (out of office)"),
    EventKind.SNOOZE: N_("Paused the course until %(value)s"),
    EventKind.FOLLOWUP: N_("Answered the follow-up: %(value)s"),
    EventKind.COMPLETED: N_("Completed the course (run %(run)s)"),
    EventKind.BOOKING_CONFIRMED: N_("Booked a session"),
    EventKind.BOOKING_CANCELLED: N_("Cancelled a booked session"),
    EventKind.BOOKING_RESCHEDULED: N_("Moved a booked session to another time"),
}

#: The same kinds with a lesson to name that carry none (an unsubscribe from a page).
_WITH_LESSON: dict[str, str] = {
    EventKind.UNSUBSCRIBE: N_("Unsubscribed after lesson %(lesson)s"),
    EventKind.PAUSE: N_("Paused the course after lesson %(lesson)s"),
}

#: How it happened (``Event.via``); a booking system's name is shown as it is.
_VIA: dict[str, str] = {
    "link": N_("from a link in an email"),
    "page": N_("on the course's pages"),
    "one-click": N_("with the unsubscribe button of their mail app"),
    "admin": N_("by staff"),
    "relay": N_("reported by the mail relay"),
    "mailbox": N_("from the bounce mailbox"),
    "course": N_("by the course"),
    "complaint": N_("reported by a spam complaint"),
    "join": N_("by joining from another course"),
}

#: Answers stored as codes.
_ANSWERS: dict[str, str] = {
    "lighter": N_("lighter"),
    "same": N_("about the same"),
    "stirred": N_("stirred things up"),
    "end": N_("the pause was ended"),
}


def describe(event: Event, gettext: Callable[[str], str]) -> str:
    """The event as a sentence in ``gettext``'s language ("Marked lesson 2 as done")."""
    sentence = (event.lesson is not None and _WITH_LESSON.get(event.kind)) or _SENTENCES.get(
        event.kind
    )
    if sentence is None:
        return event.kind  # a kind this code does not know yet: shown as stored
    value = event.value or ""
    if event.kind == EventKind.SNOOZE and value == "end":
        return gettext(N_("Ended a pause"))
    run = value[4:] if value.startswith("run-") else value
    return gettext(sentence) % {
        "lesson": event.lesson if event.lesson is not None else "–",
        "value": gettext(_ANSWERS[value]) if value in _ANSWERS else value,
        "run": run or "1",
    }


def how(event: Event, gettext: Callable[[str], str]) -> str:
    """How it happened ("from a link in an email"); a booking system by its name."""
    found = _VIA.get(event.via)
    return gettext(found) if found is not None else event.via
