"""Lesson files: the real course loads; broken files are reported and skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from course.lessons import LessonLibrary, load_lessons, markdown_to_text
from tests.helpers import REPO

LESSONS = REPO / "lessons"
GOOD = """---
day: {day}
subject: "Day {{day}} of {{total}}: A title"
title: "A title"
---
Some *kind* words.

## Today's reflection

- One prompt.
"""


def test_the_course_has_five_lessons_in_order() -> None:
    lessons = load_lessons(LESSONS)
    assert lessons.errors == {}
    assert lessons.total == 5
    assert sorted(lessons.lessons) == [1, 2, 3, 4, 5]
    for lesson in lessons.lessons.values():
        assert lesson.subject.startswith(f"Day {lesson.day} of 5")
        assert "Today's reflection" in lesson.body_markdown
        assert "<script" not in lesson.body_html


def test_a_sixth_lesson_takes_only_a_new_file(tmp_path: Path) -> None:
    for path in LESSONS.glob("*.md"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "06-looking-ahead.md").write_text(GOOD.format(day=6))
    lessons = load_lessons(tmp_path)
    assert lessons.total == 6
    assert lessons.lessons[6].subject == "Day 6 of 6: A title"
    assert lessons.lessons[1].subject.startswith("Day 1 of 6")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("no front matter at all", "missing front matter"),
        ("---\nday: [\n---\nbody", "not valid YAML"),
        ('---\nday: 1\ntitle: "T"\n---\nbody', "subject"),
        ('---\nday: one\nsubject: "S"\ntitle: "T"\n---\nbody', "'day' must be a whole number"),
        ('---\nday: 1\nsubject: "S"\ntitle: "T"\n---\n', "no text"),
        ('---\nday: 1\nsubject: {a: 1}\ntitle: "T"\n---\nbody', "'subject' must be text"),
        ('---\nday: 9\nsubject: "S"\ntitle: "T"\n---\nbody', "past the course length"),
    ],
)
def test_broken_files_are_reported_with_the_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    (tmp_path / "01-good.md").write_text(GOOD.format(day=1))
    (tmp_path / "02-broken.md").write_text(content)
    lessons = load_lessons(tmp_path)
    assert sorted(lessons.lessons) == [1]
    assert reason in lessons.errors["02-broken.md"]


def test_raw_html_in_a_lesson_is_not_passed_through(tmp_path: Path) -> None:
    (tmp_path / "01-x.md").write_text(
        GOOD.format(day=1).replace("Some", "<script>alert(1)</script> Some")
    )
    html = load_lessons(tmp_path).lessons[1].body_html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_duplicate_days_are_reported(tmp_path: Path) -> None:
    (tmp_path / "01-a.md").write_text(GOOD.format(day=1))
    (tmp_path / "01-b.md").write_text(GOOD.format(day=1))
    assert "already used" in load_lessons(tmp_path).errors["01-b.md"]


def test_library_reloads_after_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "01-a.md"
    path.write_text(GOOD.format(day=1))
    library = LessonLibrary(tmp_path)
    first = library.current()
    assert library.current() is first
    path.write_text(GOOD.format(day=1).replace("A title", "A new title"))
    assert library.current().lessons[1].title == "A new title"


def test_markdown_to_text_wraps_and_keeps_lists() -> None:
    text = markdown_to_text(
        "## Heading\n\nA **bold** word. " + "long " * 40 + "\n\n- item one\n- item two"
    )
    assert "Heading\n-------" in text
    assert "A bold word." in text
    assert max(len(line) for line in text.splitlines()) <= 72
    assert "- item one\n- item two" in text


def test_the_sender_sees_every_edit_of_a_lesson(tmp_path: Path) -> None:
    """Regression: compiled emails were cached by id() of the lesson set, which Python
    reuses once the old set is freed, so an edit could bring back an older version."""
    from course.config import Settings
    from course.render import Renderer
    from course.tokens import Signer

    path = tmp_path / "01-a.md"
    settings = Settings(
        database_url="sqlite://",
        secret_key="x" * 8 + "0123456789abcdef" * 3,
        lessons_dir=tmp_path,
    )
    renderer = Renderer(settings, Signer(settings.secret_keys))
    library = LessonLibrary(tmp_path)
    for version in range(8):
        path.write_text(GOOD.format(day=1).replace("Some", f"Version{version} words"))
        import os

        os.utime(path, ns=(version * 10**9, version * 10**9))
        html = renderer.compiled("lesson", 1, library.current()).html
        assert f"Version{version}" in html
