"""Lessons and course folders: the shipped course reads cleanly; broken files and
unknown placeholders are reported with the reason; the rule of a reader's next lesson."""

from __future__ import annotations

from pathlib import Path

import pytest

from course.content import CourseContent, compile_content, content_problems
from course.coursefiles import read_course_folder
from course.lessons import (
    LessonError,
    LessonFields,
    compile_lesson,
    lesson_problems,
    markdown_to_text,
)
from tests.helpers import REPO

LESSONS = REPO / "lessons"
GOOD = """---
key: {key}
subject: "Day {{day}} of {{total}}: A title"
title: "A title"
---
Some *kind* words.

## Today's reflection

- One prompt.
"""


def fields(**overrides: object) -> LessonFields:
    values: dict[str, object] = {
        "key": 1,
        "subject": "Day {day} of {total}: Hello",
        "title": "Hello",
        "body": "Kind words.",
    }
    values.update(overrides)
    return LessonFields(**values)  # type: ignore[arg-type]


def test_the_shipped_course_has_five_lessons_in_order() -> None:
    folder = read_course_folder(LESSONS)
    assert folder.errors == {}
    assert folder.meta.slug == "feeling-secure"
    compiled = compile_content(folder.content)
    assert compiled.errors == {}
    assert compiled.order == (1, 2, 3, 4, 5)
    assert [compiled.lessons[k].delay_days for k in compiled.order] == [0, 1, 1, 1, 1]
    for position, key in enumerate(compiled.order, start=1):
        lesson = compiled.lessons[key].for_reader(position, 5)
        assert lesson.subject.startswith(f"Day {position} of 5")
        assert "Today's reflection" in lesson.body_markdown
        assert "<script" not in lesson.body_html
    assert compiled.completion is not None and compiled.followup is not None
    assert compiled.followup.days == 14


def test_a_sixth_lesson_takes_only_a_new_file(tmp_path: Path) -> None:
    for path in LESSONS.iterdir():
        if path.suffix in (".md", ".yaml"):
            (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "06-looking-ahead.md").write_text(GOOD.format(key=6))
    compiled = compile_content(read_course_folder(tmp_path).content)
    assert compiled.total == 6
    assert compiled.lessons[6].for_reader(6, 6).subject == "Day 6 of 6: A title"
    assert compiled.lessons[6].delay_days == 1  # no delay given: the day after the one before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("no front matter at all", "missing front matter"),
        ("---\nkey: [\n---\nbody", "not valid YAML"),
        ('---\nkey: one\nsubject: "S"\ntitle: "T"\n---\nbody', "'key' must be a whole number"),
        ('---\nkey: 2\nsubject: {a: 1}\ntitle: "T"\n---\nbody', "'subject' must be text"),
        ('---\nkey: 2\ndelay: -1\nsubject: "S"\ntitle: "T"\n---\nbody', "'delay' must be"),
        ('---\nkey: 2\nsubject: "S"\ntitle: "T"\ncolour: red\n---\nbody', "unknown front matter"),
        ('---\nkey: 1\nsubject: "S"\ntitle: "T"\n---\nbody', "already used"),
    ],
)
def test_broken_files_are_reported_with_the_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    (tmp_path / "01-good.md").write_text(GOOD.format(key=1))
    (tmp_path / "02-broken.md").write_text(content)
    folder = read_course_folder(tmp_path)
    assert reason in folder.errors["02-broken.md"]


def test_an_empty_lesson_is_refused_with_every_reason() -> None:
    problems = lesson_problems(fields(subject="", title="", body=" "))
    assert problems == ["'subject' is empty", "'title' is empty", "the lesson has no text"]
    with pytest.raises(LessonError, match="'subject' is empty; 'title' is empty"):
        compile_lesson(fields(subject="", title="", body=" "))


@pytest.mark.parametrize(
    ("field", "value", "found"),
    [
        ("subject", "Hello {name}", "{name}"),
        ("subject", "Hello {{ first_name }}", "{{ first_name }}"),
        ("title", "Hi *|FNAME|*", "*|FNAME|*"),
        ("body", "Dear {name}, welcome", "{name}"),
        ("body", "Day {day} of the course", "{day}"),  # only subject, title and preheader
        ("preheader", "For {reader.name}", "{reader.name}"),
        ("booking_prompt", "Talk to us about day {day}", "{day}"),
    ],
)
def test_unknown_placeholders_are_refused_before_they_reach_a_reader(
    field: str, value: str, found: str
) -> None:
    problems = lesson_problems(fields(**{field: value}))
    assert any(found in p and f"'{field}'" in p for p in problems), problems


def test_the_known_placeholders_are_filled_per_reader() -> None:
    lesson = compile_lesson(fields(subject="Day {day} of {total}", preheader="{day}/{total}"))
    filled = lesson.for_reader(3, 7)
    assert (filled.subject, filled.preheader) == ("Day 3 of 7", "3/7")
    assert lesson_problems(fields(subject="{day}", title="{total}", preheader="{day}")) == []


def test_raw_html_in_a_lesson_is_not_passed_through() -> None:
    lesson = compile_lesson(fields(body="<script>alert(1)</script> Some words"))
    assert "<script>" not in lesson.body_html and "&lt;script&gt;" in lesson.body_html


def test_a_course_without_lessons_or_with_a_broken_one_cannot_be_published() -> None:
    assert content_problems(CourseContent()) == ["the course has no lessons"]
    broken = CourseContent(lessons=(fields(), fields(key=2, title="", subject="S")))
    assert content_problems(broken) == ["lesson 2 (S): 'title' is empty"]
    twice = CourseContent(lessons=(fields(), fields(title="Again")))
    assert "the key 1 is used by another lesson" in content_problems(twice)[0]


def test_the_next_lesson_is_the_first_one_not_received_in_the_current_order() -> None:
    content = compile_content(
        CourseContent(lessons=tuple(fields(key=k, title=f"L{k}") for k in (1, 5, 2, 3)))
    )
    assert content.next_for(set()) == 1
    assert content.next_for({1}) == 5
    assert content.next_for({1, 2, 3}) == 5  # moved before the reader's place: not skipped
    assert content.next_for({1, 5, 2, 3}) is None
    assert content.next_for({1, 4}) == 5  # a removed lesson they had does not count
    # The reader's own count: three received (one of them since removed), this is the 4th.
    assert content.count_for({1, 4, 5}, 2) == (4, 5)


def test_the_stored_form_round_trips() -> None:
    content = CourseContent(lessons=(fields(), fields(key=2, delay_days=7, safety_note=True)))
    assert CourseContent.from_json(content.to_json()) == content
    with pytest.raises(ValueError, match="not valid course content"):
        CourseContent.from_json('{"lessons": [{"key": 0}]}')


def test_markdown_to_text_wraps_and_keeps_lists() -> None:
    text = markdown_to_text(
        "## Heading\n\nA **bold** word. " + "long " * 40 + "\n\n- item one\n- item two"
    )
    assert "Heading\n-------" in text
    assert "A bold word." in text
    assert max(len(line) for line in text.splitlines()) <= 72
    assert "- item one\n- item two" in text
