"""The admin's timeline sentences: every kind of event has one, in English and German."""

from __future__ import annotations

import pytest

from course.i18n import gettext_for
from course.models import Event, EventKind
from course.timeline import describe, how


def _event(kind: EventKind, lesson: int | None = 2, value: str | None = None) -> Event:
    return Event(kind=kind, lesson=lesson, value=value, via="link")


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_of_event_reads_as_a_sentence(kind: EventKind) -> None:
    for language in ("en", "de"):
        text = describe(_event(kind, value="run-3"), gettext_for(language))
        assert text != kind.value and "%(" not in text and "_" not in text, (language, text)


def test_sentences_fill_in_the_lesson_the_answer_and_the_run() -> None:
    english, german = gettext_for("en"), gettext_for("de")
    assert describe(_event(EventKind.DONE), english) == "Marked lesson 2 as done"
    assert describe(_event(EventKind.DONE), german) == "Hat Lektion 2 als erledigt markiert"
    checkin = _event(EventKind.CHECKIN, lesson=1, value="stirred")
    assert describe(checkin, english) == "Checked in on lesson 1: stirred things up"
    assert describe(checkin, german) == "Rückmeldung zu Lektion 1: hat etwas aufgewühlt"
    assert describe(_event(EventKind.CONFIRM, None, "run-2"), english) == (
        "Confirmed and started the course (run 2)"
    )
    # An unsubscribe names the last lesson received when there was one.
    assert describe(_event(EventKind.UNSUBSCRIBE, 3), english) == "Unsubscribed after lesson 3"
    assert describe(_event(EventKind.UNSUBSCRIBE, None), english) == "Unsubscribed"
    assert describe(_event(EventKind.SNOOZE, None, "end"), german) == "Hat eine Pause beendet"


def test_how_it_happened() -> None:
    assert how(_event(EventKind.BOOK), gettext_for("en")) == "from a link in an email"
    booked = Event(kind=EventKind.BOOKING_CONFIRMED, via="cal.com")
    assert how(booked, gettext_for("de")) == "cal.com"  # a booking system, by its name
