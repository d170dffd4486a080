"""The course's copy as a reader sees it: plain-text layout, wording fixed in review, the
day-1 safety paragraph, and no offer to pause a course that is over."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from course.config import Settings
from course.coursefiles import read_course_folder
from course.courses import PublishedCourse, folder_view
from course.render import Reader, Renderer
from course.resources import lessons_dir
from course.tokens import Signer
from tests.helpers import REPO, html_part, text_part

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
READER = Reader("pub-id-123", "ana@example.com", "Ana")
DAYS = [1, 2, 3, 4, 5]
MAX_LINE = 78

#: Wording that review found wrong, and must not come back (compared case-insensitively,
#: with whitespace collapsed and typographic apostrophes made plain).
WRONG_PHRASES = [
    "hoping rarely works",  # "Hinting and hoping rarely work"
    "did today's exercise?",  # a sentence without its subject
    "past four days",  # untrue after a pause
    "this week",  # untrue after a pause
    "tonight",  # lessons arrive in the morning
    "not marked as done",  # reads as a judgement
]

SAFETY_SENTENCE = "Some insecurity is a reasonable response to how a partner treats you."

# A line that is a URL, or a short label and a URL ("Book a session: https://...").
URL_LINE = re.compile(r"^(?:[^:]{1,40}:\s+)?\(?https?://\S+$")
DOUBLED_WORD = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)


@pytest.fixture
def renderer(settings: Settings) -> Renderer:
    return Renderer(settings, Signer(settings.secret_keys))


@pytest.fixture
def lessons(settings: Settings) -> PublishedCourse:
    return folder_view(lessons_dir(settings))[0]


def normalize(text: str) -> str:
    """Lower case, one space between words, plain apostrophes and quotes."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()


def without_urls(text: str) -> str:
    return re.sub(r"https?://\S+", " ", text)


def visible_text(html: str) -> str:
    """The words of an HTML part (tags and the hidden preheader's markup dropped)."""
    from html import unescape

    return unescape(re.sub(r"<[^>]+>", " ", html))


def long_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > MAX_LINE and not URL_LINE.match(line)]


CAPS_RUN = re.compile(r"\b[A-Z][A-Z']+[?:!.,]?(?:\s+[A-Z][A-Z']+[?:!.,]?){2,}")


def all_caps_lines(text: str) -> list[str]:
    """Lines in capitals, or with a run of three words in capitals ("HOW DID TODAY'S...")."""
    found = []
    for line in without_urls(text).splitlines():
        letters = re.findall(r"[A-Za-z]", line)
        if len(letters) >= 4 and all(ch.isupper() for ch in letters) or CAPS_RUN.search(line):
            found.append(line)
    return found


def doubled_words(text: str) -> list[str]:
    return [m.group(0) for m in DOUBLED_WORD.finditer(without_urls(text))]


def plain(data: bytes) -> str:
    """The text part with the line endings a reader's screen shows."""
    return text_part(data).replace("\r\n", "\n")


def build(
    renderer: Renderer, lessons: PublishedCourse, day: int, kind: str = "lesson"
) -> tuple[str, str]:
    data = renderer.build(kind, day, READER, lessons, NOW)
    return plain(data), html_part(data)


AFTER_COURSE = ["completion", "followup"]


# -- the plain-text part -------------------------------------------------------------------


@pytest.mark.parametrize("day", DAYS)
def test_text_part_lines_fit_a_mail_reader(
    renderer: Renderer, lessons: PublishedCourse, day: int
) -> None:
    text, _ = build(renderer, lessons, day)
    assert long_lines(text) == []


@pytest.mark.parametrize("day", DAYS)
def test_text_part_has_no_all_caps_heading(
    renderer: Renderer, lessons: PublishedCourse, day: int
) -> None:
    text, _ = build(renderer, lessons, day)
    assert all_caps_lines(text) == []
    # The title is in normal case, underlined.
    title = f"Day {day} of 5: {lessons.content.lessons[day].title}"
    assert f"{title}\n{'=' * len(title)}\n" in text
    assert "How did today's lesson land?\n----------------------------\n" in text


@pytest.mark.parametrize("day", DAYS)
def test_no_doubled_words(renderer: Renderer, lessons: PublishedCourse, day: int) -> None:
    text, html = build(renderer, lessons, day)
    assert doubled_words(text) == []
    assert doubled_words(visible_text(html)) == []


@pytest.mark.parametrize("day", DAYS)
def test_no_wording_that_review_found_wrong(
    renderer: Renderer, lessons: PublishedCourse, day: int
) -> None:
    text, html = build(renderer, lessons, day)
    for part in (normalize(text), normalize(visible_text(html))):
        for phrase in WRONG_PHRASES:
            assert phrase not in part, (day, phrase)


def test_no_wording_that_review_found_wrong_in_lesson_and_template_sources() -> None:
    """The pages (check-in, done, lesson view) and emails as written, not only as rendered."""
    files = sorted((REPO / "lessons").glob("*.md"))
    for folder in ("email", "web"):
        files += sorted((REPO / "templates" / folder).glob("*.html"))
        files += sorted((REPO / "templates" / folder).glob("*.txt"))
    assert files
    for path in files:
        source = path.read_text(encoding="utf-8")
        # Jinja tags and comments are not copy.
        copy = re.sub(r"\{[{%#].*?[}%#]\}", " ", source, flags=re.DOTALL)
        words = normalize(re.sub(r"<[^>]+>", " ", copy))
        for phrase in WRONG_PHRASES:
            assert phrase not in words, (path.name, phrase)
        assert "| upper" not in source and "|upper" not in source, path.name


def test_the_text_part_tells_the_reader_what_the_done_link_is_for(
    renderer: Renderer, lessons: PublishedCourse
) -> None:
    text, _ = build(renderer, lessons, 1)
    assert re.search(
        r"If you found a moment for today's exercise, you can let us know here:\n"
        r"https://course\.example\.org/done/\S+\n",
        text,
    )


@pytest.mark.parametrize("kind", AFTER_COURSE)
def test_the_emails_after_the_course_fit_too(
    renderer: Renderer, lessons: PublishedCourse, kind: str
) -> None:
    text, html = build(renderer, lessons, 0, kind)
    assert long_lines(text) == []
    assert all_caps_lines(text) == []
    assert doubled_words(text) == [] and doubled_words(visible_text(html)) == []
    for part in (normalize(text), normalize(visible_text(html))):
        for phrase in WRONG_PHRASES:
            assert phrase not in part, (kind, phrase)
    assert "/book/" in text and "/unsubscribe/" in text and "/me/" in text
    # Nothing after the course offers to pause it.
    assert "/pause/" not in text and "/pause/" not in html


def test_the_confirmation_text_fits_too(renderer: Renderer, lessons: PublishedCourse) -> None:
    text = plain(renderer.build("confirm", 1, READER, lessons, NOW))
    assert long_lines(text) == []
    assert all_caps_lines(text) == []
    assert doubled_words(text) == []
    assert re.search(r"Never email me again:\nhttps://course\.example\.org/unsubscribe/\S+", text)


def test_long_practice_copy_is_wrapped_and_urls_stay_whole(tmp_path: Path) -> None:
    """A practice's own crisis text, booking prompt and title wrap; a URL is never broken."""
    url = "https://www.example.org/a-long-path/to-the-crisis-lines-of-every-country?lang=en"
    prompt = "If it would help to talk any of this through, " * 4
    (tmp_path / "01-one.md").write_text(
        "---\nkey: 1\n"
        'subject: "Day {day} of {total}: One"\n'
        f'title: "{"A rather long title for a lesson " * 3}"\n'
        f'booking_prompt: "{prompt.strip()}"\n'
        "---\nSome words.\n\n## Today's reflection\n\n- One prompt.\n"
    )
    settings = Settings(
        database_url="sqlite://",
        secret_key="k" * 40,
        base_url="https://course.example.org",
        lessons_dir=tmp_path,
        crisis_text=f"Please call your local emergency number, or see the list at {url} "
        "for a free, confidential line near you, any time of the day or night.",
    )
    renderer = Renderer(settings, Signer(settings.secret_keys))
    text = plain(renderer.build("lesson", 1, READER, folder_view(tmp_path)[0], NOW))
    assert long_lines(text) == []
    assert url in text.splitlines()  # whole, and on a line of its own
    assert "\n=====" in text


# -- the day-1 safety paragraph --------------------------------------------------------------


def test_lesson_one_says_early_that_insecurity_can_be_a_reasonable_response(
    renderer: Renderer, lessons: PublishedCourse
) -> None:
    lesson = lessons.content.lessons[1]
    body = normalize(lesson.body_markdown)
    sentence = normalize(SAFETY_SENTENCE)
    assert sentence in body
    # Early: before the lesson turns to the roots of insecurity.
    assert body.index(sentence) < body.index("## some common roots")
    assert "domestic abuse line listed at the end of this email" in body
    text, html = build(renderer, lessons, 1)
    assert sentence in normalize(text)
    assert sentence in normalize(visible_text(html))


def test_lesson_one_asks_for_the_safety_note() -> None:
    first = read_course_folder(REPO / "lessons").content.lessons[0]
    assert first.key == 1 and first.safety_note is True


def test_lesson_four_points_back_to_day_one(lessons: PublishedCourse) -> None:
    body = normalize(lessons.content.lessons[4].body_markdown)
    assert "as we said in the first lesson" in body
    assert "domestic abuse line listed at the end of this email" in body


# -- the last lesson -------------------------------------------------------------------------


@pytest.mark.parametrize("day", DAYS)
def test_only_the_last_lesson_has_no_pause_link(
    renderer: Renderer, lessons: PublishedCourse, day: int
) -> None:
    text, html = build(renderer, lessons, day)
    last = day == lessons.content.total
    for part in (text, html):
        assert ("/pause/" in part) is not last, (day, part[-600:])
        assert ("Pause the course" in part) is not last
        # The unsubscribe link is in every lesson.
        assert re.search(r"https://course\.example\.org/unsubscribe/[\w.-]+", part)
