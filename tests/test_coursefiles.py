"""Courses as folders of Markdown files: ``course courses list``, ``export`` and ``import``
(course.coursefiles, course.courses.import_folder), through the real command and database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from course.app import create_app
from course.content import CourseContent
from course.courses import published_content, save_draft
from course.mail.outbox import OutboxTransport
from course.models import Course, CourseStatus, CourseVersion, utcnow
from tests.conftest import CourseRunner, FakeClock, make_config, make_sender, outbox_messages
from tests.helpers import REPO, parse
from tests.test_links import enrol

FIRST = "feeling-secure"  # the shipped course's slug (lessons/course.yaml)


@pytest.fixture
def course_app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """An app on SQLite or PostgreSQL (the default ``app`` is SQLite only)."""
    application = create_app(make_config(tmp_path, db_url))
    yield application
    application.extensions["course"].engine.dispose()


def course_row(app: Flask, slug: str) -> Course | None:
    with app.extensions["course"].sessions() as session:
        found: Course | None = session.scalar(select(Course).where(Course.slug == slug))
        return found


def content_of(app: Flask, slug: str) -> CourseContent:
    """What readers of the course get now."""
    with app.extensions["course"].sessions() as session:
        course = session.scalar(select(Course).where(Course.slug == slug))
        assert course is not None
        return published_content(session, course)


def version_count(app: Flask) -> int:
    with app.extensions["course"].sessions() as session:
        return int(session.scalar(select(func.count()).select_from(CourseVersion)) or 0)


def exported(runner: CourseRunner, tmp_path: Path, slug: str = FIRST, *extra: str) -> Path:
    folder = tmp_path / f"export-{slug}"
    result = runner.invoke(["courses", "export", slug, str(folder), *extra])
    assert result.exit_code == 0, result.output
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def set_slug(folder: Path, slug: str) -> None:
    edit(folder / "course.yaml", f"slug: {FIRST}", f"slug: {slug}")


# -- export -------------------------------------------------------------------------------


def test_exporting_the_first_course_gives_the_repository_lessons_folder(
    runner: CourseRunner, tmp_path: Path
) -> None:
    """The repository's lessons/ folder is the first course's source: the seeded course,
    exported, is that folder byte for byte (__init__.py only makes it a Python package)."""
    folder = exported(runner, tmp_path)
    lessons = (REPO / "lessons").iterdir()
    # lessons/de is the German course (issue 16), a course folder of its own.
    source = {p.name: p.read_bytes() for p in lessons if p.is_file() and p.suffix != ".py"}
    written = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(written) == sorted(source)
    assert "course.yaml" in written and "completion.md" in written and "followup.md" in written
    for name, data in source.items():
        assert written[name] == data, f"{name} differs from lessons/{name}"


def test_the_repository_lessons_folder_imports_cleanly(app: Flask, runner: CourseRunner) -> None:
    # Into the first course itself: nothing to change, so no new version.
    same = runner.invoke(["courses", "import", str(REPO / "lessons")])
    assert same.exit_code == 0, same.output
    assert "Changes against version 1 of 'feeling-secure':\n  none" in same.output
    assert "unchanged: still version 1" in same.output
    assert version_count(app) == 1
    # As a course of its own: the same content as the seeded one.
    new = runner.invoke(["courses", "import", str(REPO / "lessons"), "--slug", "copy"])
    assert new.exit_code == 0, new.output
    assert "Published 'copy' version 1." in new.output
    assert content_of(app, "copy") == content_of(app, FIRST)


def test_export_refuses_a_folder_that_holds_something_else(
    runner: CourseRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "shopping.md").write_text("milk\n", encoding="utf-8")
    refused = runner.invoke(["courses", "export", FIRST, str(folder)])
    assert refused.exit_code == 1
    assert "is not a course folder" in refused.output and "--force" in refused.output
    assert (folder / "shopping.md").read_text(encoding="utf-8") == "milk\n"
    assert not (folder / "course.yaml").exists()
    forced = runner.invoke(["courses", "export", FIRST, str(folder), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (folder / "course.yaml").exists() and not (folder / "shopping.md").exists()


def test_export_into_a_course_folder_replaces_its_lessons(
    runner: CourseRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "course"
    (folder / ".git").mkdir(parents=True)  # a fresh git repository counts as empty
    (folder / "README.md").write_text("# Our course\n", encoding="utf-8")
    first = runner.invoke(["courses", "export", FIRST, str(folder)])
    assert first.exit_code == 1  # README.md: not empty, and not a course folder yet
    (folder / "README.md").unlink()
    exported_once = runner.invoke(["courses", "export", FIRST, str(folder)])
    assert exported_once.exit_code == 0, exported_once.output
    (folder / "README.md").write_text("# Our course\n", encoding="utf-8")
    (folder / "06-old-lesson.md").write_text("---\nkey: 9\n---\nold\n", encoding="utf-8")
    again = runner.invoke(["courses", "export", FIRST, str(folder)])
    assert again.exit_code == 0, again.output
    assert not (folder / "06-old-lesson.md").exists()  # gone from the course, gone here
    assert (folder / "README.md").exists() and (folder / ".git").is_dir()


def test_export_errors_are_clear(app: Flask, runner: CourseRunner, tmp_path: Path) -> None:
    missing = runner.invoke(["courses", "export", "nope", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "There is no course 'nope'" in missing.output
    no_draft = runner.invoke(["courses", "export", FIRST, str(tmp_path / "x"), "--draft"])
    assert no_draft.exit_code == 1 and "has no open draft" in no_draft.output
    assert not (tmp_path / "x").exists()


def test_export_of_the_draft(app: Flask, runner: CourseRunner, tmp_path: Path) -> None:
    content = content_of(app, FIRST)
    changed = content.lessons[0].model_copy(update={"title": "A new first title"})
    with app.extensions["course"].sessions() as session, session.begin():
        course = session.scalar(select(Course).where(Course.slug == FIRST))
        assert course is not None
        save_draft(course, content.model_copy(update={"lessons": (changed,)}), utcnow())
    published = exported(runner, tmp_path)
    draft = exported(runner, tmp_path / "d", FIRST, "--draft")
    assert "title: A new first title" in (draft / "01-where-insecurity-comes-from.md").read_text()
    assert len(list(draft.glob("0*.md"))) == 1
    assert len(list(published.glob("0*.md"))) == 5


# -- import -------------------------------------------------------------------------------


def test_export_import_round_trip(course_app: Flask, tmp_path: Path) -> None:
    """Export the seeded course, import it under a new slug: the stored content is the
    same, and exporting the copy gives the same files again."""
    runner = CourseRunner(course_app)
    folder = exported(runner, tmp_path)
    result = runner.invoke(["courses", "import", str(folder), "--slug", "second"])
    assert result.exit_code == 0, result.output
    assert "A new course 'second': 5 lessons, a completion email, a follow-up email" in (
        result.output
    )
    assert "Published 'second' version 1." in result.output
    assert content_of(course_app, "second") == content_of(course_app, FIRST)
    copy, first = course_row(course_app, "second"), course_row(course_app, FIRST)
    assert copy is not None and first is not None
    assert (copy.title, copy.description) == (first.title, first.description)
    assert copy.status == CourseStatus.DRAFT  # not open for signups without --publish
    again = exported(runner, tmp_path, "second")
    for path in folder.iterdir():
        expected = path.read_bytes()
        if path.name == "course.yaml":
            expected = expected.replace(f"slug: {FIRST}".encode(), b"slug: second")
        assert (again / path.name).read_bytes() == expected, path.name


def test_import_shows_the_changes_and_publishes_a_new_version(
    app: Flask, runner: CourseRunner, tmp_path: Path
) -> None:
    folder = exported(runner, tmp_path)
    edit(folder / "02-self-reflection.md", "title: Getting to know", "title: Looking inward,")
    (folder / "04-communication.md").unlink()
    (folder / "06-keeping-going.md").write_text(
        "---\nkey: 6\ndelay: 3\nsubject: 'Day {day} of {total}: Keeping going'\n"
        "title: Keeping going\n---\n\nA last lesson.\n",
        encoding="utf-8",
    )
    edit(folder / "followup.md", "days: 14", "days: 21")
    result = runner.invoke(["courses", "import", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Changes against version 1 of 'feeling-secure':"
    assert '  changed  lesson 2 "Looking inward, your triggers" (key 2): title' in lines
    assert '  added    lesson 5 "Keeping going" (key 6, 06-keeping-going.md)' in lines
    assert '  removed  "Letting your partner in" (key 4, was lesson 4)' in lines
    assert "  changed  follow-up email: days" in lines
    assert not [line for line in lines if line.startswith("  moved")]
    assert "Published 'feeling-secure' version 2." in lines
    content = content_of(app, FIRST)
    assert [lesson.key for lesson in content.lessons] == [1, 2, 3, 5, 6]
    assert content.lesson(6) is not None and content.lesson(6).delay_days == 3  # type: ignore[union-attr]
    assert content.followup is not None and content.followup.days == 21


def test_keys_survive_a_reorder_by_file_name(
    app: Flask, runner: CourseRunner, tmp_path: Path
) -> None:
    """Lessons are placed by file name and known by key: swapping two file names moves
    the lessons, and each keeps its key (so readers' history still points at it)."""
    before = content_of(app, FIRST)
    folder = exported(runner, tmp_path)
    (folder / "02-self-reflection.md").rename(folder / "03b-self-reflection.md")
    (folder / "03-self-esteem.md").rename(folder / "02-self-esteem.md")
    (folder / "03b-self-reflection.md").rename(folder / "03-self-reflection.md")
    result = runner.invoke(["courses", "import", str(folder)])
    assert result.exit_code == 0, result.output
    moved = [line for line in result.output.splitlines() if line.startswith("  moved")]
    assert len(moved) == 1, result.output  # one lesson moved, not every one after it
    assert "changed" not in result.output
    after = content_of(app, FIRST)
    assert [lesson.key for lesson in after.lessons] == [1, 3, 2, 4, 5]
    for key in (1, 2, 3, 4, 5):
        assert after.lesson(key) == before.lesson(key)
    # A reader who had lessons 1 and 2 gets lesson 3 next, wherever it now stands.
    catalogue = app.extensions["course"].courses.current()
    course = catalogue.by_slug(FIRST)
    assert course is not None and course.content.next_for({1, 2}) == 3
    assert course.content.next_for({1, 3}) == 2


def test_completion_and_followup_round_trip(
    app: Flask, runner: CourseRunner, tmp_path: Path
) -> None:
    folder = exported(runner, tmp_path)
    (folder / "completion.md").write_text(
        "---\nsubject: Well done\ndays: 0\n---\n\nYou made it.\n", encoding="utf-8"
    )
    (folder / "followup.md").write_text(
        "---\nsubject: Three weeks on\ndays: 21\n---\n\nHow are you?\n", encoding="utf-8"
    )
    result = runner.invoke(["courses", "import", str(folder), "--slug", "after"])
    assert result.exit_code == 0, result.output
    content = content_of(app, "after")
    assert content.completion is not None and content.followup is not None
    assert (content.completion.subject, content.completion.body, content.completion.days) == (
        "Well done",
        "You made it.",
        0,
    )
    assert (content.followup.subject, content.followup.days) == ("Three weeks on", 21)
    again = exported(runner, tmp_path, "after")
    for name in ("completion.md", "followup.md"):
        assert (again / name).read_bytes() == (folder / name).read_bytes()
    # Without the files, the course has neither email.
    (folder / "completion.md").unlink()
    (folder / "followup.md").unlink()
    removed = runner.invoke(["courses", "import", str(folder), "--slug", "after"])
    assert removed.exit_code == 0, removed.output
    assert "  removed  completion email" in removed.output
    assert "  removed  follow-up email" in removed.output
    content = content_of(app, "after")
    assert content.completion is None and content.followup is None
    assert not (exported(runner, tmp_path / "2", "after") / "followup.md").exists()


BREAKAGES: list[tuple[str, str | bytes, str]] = [
    # (file, what is written into it, a phrase of the message)
    ("03-self-esteem.md", "---\nkey: [3\n---\nText\n", "front matter is not valid YAML"),
    ("03-self-esteem.md", b"---\nkey: 3\n---\n\xff\xfe broken\n", "not UTF-8"),
    ("03-self-esteem.md", "Just text, no front matter.\n", "missing front matter"),
    ("03-self-esteem.md", "---\nkey: 3\nsubjet: Hi\ntitle: T\n---\nText\n", "subjet"),
    ("03-self-esteem.md", "---\nkey: 3\ndelay: soon\n---\nText\n", "'delay' must be"),
    ("03-self-esteem.md", "---\nkey: 2\nsubject: S\ntitle: T\n---\nText\n", "key 2"),
    ("03-self-esteem.md", "---\nkey: 3\nsubject: S\n---\nText\n", "'title' is empty"),
    ("completion.md", "---\nsubject: Done\ndays: -1\n---\nText\n", "'days' must be"),
    ("course.yaml", "slug: x\nbooking_url: 'javascript:alert(1)//http://x'\n", "url"),
    ("course.yaml", "slug: Not A Slug\n", "slug"),
    ("course.yaml", b"slug: x\ntitle: \xff\n", "not UTF-8"),
]


@pytest.mark.parametrize(("name", "written", "phrase"), BREAKAGES)
def test_a_folder_with_one_broken_file_imports_nothing(
    app: Flask,
    runner: CourseRunner,
    tmp_path: Path,
    name: str,
    written: str | bytes,
    phrase: str,
) -> None:
    folder = exported(runner, tmp_path)
    # A real change elsewhere, which must not be published either.
    edit(folder / "01-where-insecurity-comes-from.md", "title: Where", "title: Wherever")
    if isinstance(written, bytes):
        (folder / name).write_bytes(written)
    else:
        (folder / name).write_text(written, encoding="utf-8")
    before = content_of(app, FIRST)
    for args in (["--dry-run"], [], ["--slug", "fresh"]):
        result = runner.invoke(["courses", "import", str(folder), *args])
        assert result.exit_code == 1, result.output
        assert "Nothing was imported." in result.output
        assert phrase.lower() in result.output.lower(), result.output
        assert "Traceback" not in result.output
    assert content_of(app, FIRST) == before
    assert version_count(app) == 1
    assert course_row(app, "fresh") is None and course_row(app, "x") is None


def test_a_broken_import_leaves_both_databases_untouched(course_app: Flask, tmp_path: Path) -> None:
    """The refusal comes before anything is written, on PostgreSQL as on SQLite."""
    runner = CourseRunner(course_app)
    folder = exported(runner, tmp_path)
    (folder / "02-self-reflection.md").write_text("---\nkey: 2\n", encoding="utf-8")
    result = runner.invoke(["courses", "import", str(folder), "--slug", "other"])
    assert result.exit_code == 1 and "02-self-reflection.md" in result.output
    assert course_row(course_app, "other") is None
    assert version_count(course_app) == 1


@pytest.mark.parametrize(
    ("file_name", "old", "new", "token"),
    [
        ("02-self-reflection.md", "title: Getting", "title: Hello {name}, getting", "{name}"),
        ("02-self-reflection.md", "subject: 'Day", "subject: '{{ x }} Day", "{{ x }}"),
        ("03-self-esteem.md", "\n\n", "\n\nHi *|FNAME|*,\n\n", "*|FNAME|*"),
        ("03-self-esteem.md", "\n\n", "\n\nThis is day {day}.\n\n", "{day}"),  # not in the text
        ("followup.md", "\n\n", "\n\nDear {first_name},\n\n", "{first_name}"),
    ],
)
def test_unknown_placeholders_are_refused_at_import(
    app: Flask,
    runner: CourseRunner,
    tmp_path: Path,
    file_name: str,
    old: str,
    new: str,
    token: str,
) -> None:
    folder = exported(runner, tmp_path)
    edit(folder / file_name, old, new)
    result = runner.invoke(["courses", "import", str(folder)])
    assert result.exit_code == 1, result.output
    assert f"unknown placeholder {token}" in result.output
    assert "Nothing was imported." in result.output
    assert version_count(app) == 1


def test_dry_run_changes_nothing(app: Flask, runner: CourseRunner, tmp_path: Path) -> None:
    folder = exported(runner, tmp_path)
    edit(folder / "05-seeking-support.md", "title: ", "title: Finally, ")
    before = content_of(app, FIRST)
    result = runner.invoke(["courses", "import", str(folder), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "  changed  lesson 5" in result.output and "(key 5): title" in result.output
    assert result.output.rstrip().endswith("Dry run: nothing was changed.")
    assert content_of(app, FIRST) == before and version_count(app) == 1
    new = runner.invoke(["courses", "import", str(folder), "--slug", "new", "--dry-run"])
    assert new.exit_code == 0, new.output
    assert "A new course 'new': 5 lessons" in new.output
    assert course_row(app, "new") is None and version_count(app) == 1
    # Then for real.
    real = runner.invoke(["courses", "import", str(folder)])
    assert real.exit_code == 0 and "version 2" in real.output
    assert content_of(app, FIRST) != before


def test_publish_opens_a_new_course_for_signups(
    app: Flask, client: FlaskClient, runner: CourseRunner, tmp_path: Path
) -> None:
    folder = exported(runner, tmp_path)
    set_slug(folder, "anxiety")
    draft = runner.invoke(["courses", "import", str(folder)])
    assert draft.exit_code == 0, draft.output
    assert "The course is a draft: nobody can sign up yet" in draft.output
    assert client.get("/c/anxiety").status_code == 404
    opened = runner.invoke(["courses", "import", str(folder), "--publish"])
    assert opened.exit_code == 0, opened.output
    assert "still version 1" in opened.output  # same content: no new version
    assert "Open for signups at /c/anxiety." in opened.output
    row = course_row(app, "anxiety")
    assert row is not None and row.status == CourseStatus.PUBLISHED
    assert client.get("/c/anxiety").status_code == 200


def test_the_key_of_a_removed_lesson_is_not_given_to_a_new_one(
    app: Flask, runner: CourseRunner, tmp_path: Path
) -> None:
    folder = exported(runner, tmp_path)
    lesson5 = (folder / "05-seeking-support.md").read_text(encoding="utf-8")
    (folder / "05-seeking-support.md").unlink()
    assert runner.invoke(["courses", "import", str(folder)]).exit_code == 0  # version 2
    (folder / "05-something-else.md").write_text(
        "---\nkey: 5\nsubject: Something else\ntitle: Something else\n---\n\nNew.\n",
        encoding="utf-8",
    )
    reused = runner.invoke(["courses", "import", str(folder)])
    assert reused.exit_code == 1, reused.output
    removed = '"You don\'t have to do this alone"'
    assert f"key 5 belonged to the removed lesson {removed}" in reused.output
    assert "(key: 6)" in reused.output
    assert version_count(app) == 2
    # The same lesson coming back (its slug) keeps its key.
    (folder / "05-something-else.md").unlink()
    (folder / "05-seeking-support.md").write_text(lesson5, encoding="utf-8")
    back = runner.invoke(["courses", "import", str(folder)])
    assert back.exit_code == 0, back.output
    assert f"  added    lesson 5 {removed} (key 5, 05-seeking-support.md)" in back.output


def test_an_open_draft_is_not_thrown_away_silently(
    app: Flask, runner: CourseRunner, tmp_path: Path
) -> None:
    folder = exported(runner, tmp_path)
    edit(folder / "01-where-insecurity-comes-from.md", "title: Where", "title: Wherever")
    with app.extensions["course"].sessions() as session, session.begin():
        course = session.scalar(select(Course).where(Course.slug == FIRST))
        assert course is not None
        save_draft(course, published_content(session, course), utcnow())
    refused = runner.invoke(["courses", "import", str(folder)])
    assert refused.exit_code == 1 and "unpublished draft" in refused.output
    assert version_count(app) == 1
    row = course_row(app, FIRST)
    assert row is not None and row.draft is not None
    done = runner.invoke(["courses", "import", str(folder), "--discard-draft"])
    assert done.exit_code == 0, done.output
    row = course_row(app, FIRST)
    assert row is not None and row.draft is None and version_count(app) == 2


def test_old_lesson_files_name_their_place_with_day(
    app: Flask, runner: CourseRunner, tmp_path: Path
) -> None:
    """Lesson files from before courses existed (``day:``, no ``key:``) still import."""
    folder = tmp_path / "old"
    folder.mkdir()
    for day, title in ((1, "One"), (2, "Two")):
        (folder / f"{day:02d}-{title.lower()}.md").write_text(
            f"---\nday: {day}\nsubject: 'Day {{day}} of {{total}}: {title}'\ntitle: {title}\n"
            f"---\n\nLesson {title}.\n",
            encoding="utf-8",
        )
    result = runner.invoke(["courses", "import", str(folder), "--slug", "old-style"])
    assert result.exit_code == 0, result.output
    content = content_of(app, "old-style")
    assert [(lesson.key, lesson.delay_days, lesson.slug) for lesson in content.lessons] == [
        (1, 0, "one"),
        (2, 1, "two"),
    ]


def test_an_imported_edit_reaches_a_reader_mid_course(
    app: Flask, client: FlaskClient, runner: CourseRunner, tmp_path: Path
) -> None:
    """A reader gets each lesson as it is published when it is sent."""
    enrol(app, client, "ana@example.com")
    folder = exported(runner, tmp_path)
    edit(folder / "02-self-reflection.md", "Getting to know your triggers", "Looking inward")
    assert runner.invoke(["courses", "import", str(folder)]).exit_code == 0
    settings = app.extensions["course"].settings
    clock = FakeClock(utcnow() + timedelta(days=2))
    sender = make_sender(settings, OutboxTransport(settings.mail_url[7:]), clock)
    assert sender.tick().sent == 1
    assert parse(outbox_messages(settings)[-1])["Subject"] == "Day 2 of 5: Looking inward"


def test_courses_list(app: Flask, client: FlaskClient, runner: CourseRunner) -> None:
    enrol(app, client, "ana@example.com")
    copied = runner.invoke(["courses", "import", str(REPO / "lessons"), "--slug", "copy"])
    assert copied.exit_code == 0, copied.output
    result = runner.invoke(["courses", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "Slug",
        "Title",
        "Status",
        "Published",
        "Draft",
        "Lessons",
        "Readers",
    ]
    first = next(line for line in lines if line.startswith(FIRST))
    copy = next(line for line in lines if line.startswith("copy "))
    assert first.split()[-5:] == ["published", "v1", "-", "5", "1/1"]
    assert copy.split()[-5:] == ["draft", "v1", "-", "5", "0/0"]
