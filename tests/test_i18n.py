"""Translations: the catalogs are complete and sound, and each reader gets their course's
language throughout (emails, pages, dates), also when readers of two languages share the
app at the same time."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from course import i18n
from course.crisis import data_messages, load_resources
from course.mail.outbox import OutboxTransport
from course.models import ConsentText, Subscriber
from course.sending import Sender
from tests.conftest import CourseRunner, make_config, outbox_messages
from tests.helpers import (
    REPO,
    confirm_like_a_person,
    forms,
    html_part,
    link,
    local_path,
    parse,
    text_part,
)

CATALOGS = REPO / "course" / "translations"
LANGUAGES = [p.name for p in sorted(CATALOGS.iterdir()) if (p / "LC_MESSAGES").is_dir()]
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|%[sd]")


def _po(language: str) -> Catalog:
    with open(CATALOGS / language / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=language)


def _extracted() -> dict[str, list[str]]:
    """Every message in the sources now, as ``make messages`` extracts it (babel.cfg),
    with where it is."""
    with open(REPO / "babel.cfg") as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: dict[str, list[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(REPO),
        method_map,
        options_map,
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "N_": None},
    ):
        key = message[0] if isinstance(message, tuple) else message
        found.setdefault(key, []).append(filename)
    return found


def test_there_is_a_german_catalog() -> None:
    assert "de" in LANGUAGES
    assert "de" in i18n.available_languages()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_in_the_sources_is_translated(language: str) -> None:
    """A message added to a template or the code without `make messages` and a translation
    fails here, naming the message and the file."""
    catalog = _po(language)
    missing = []
    for message, where in _extracted().items():
        entry = catalog.get(message)
        if entry is None or not entry.string or entry.fuzzy:
            missing.append(f"{message!r} ({where[0]})")
        elif isinstance(entry.string, tuple) and not all(entry.string):
            missing.append(f"{message!r} (a plural form) ({where[0]})")
    assert not missing, f"{language}: {len(missing)} untranslated:\n" + "\n".join(missing)


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_their_placeholders(language: str) -> None:
    """``%(name)s`` in, ``%(name)s`` out: a translation that drops, renames or breaks one
    would raise (or show the wrong value) at the reader's."""
    broken = []
    for entry in _po(language):
        if not entry.id:
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            if not string:
                continue
            if set(PLACEHOLDER.findall(string)) != wanted:
                broken.append(f"{entry.id!r} -> {string!r}")
                continue
            # Jinja's newstyle gettext always %-formats: a stray % would raise.
            names = {name[2:-2]: 1 for name in wanted if name.startswith("%(")}
            try:
                string % names  # noqa: B018 - the formatting is the check
            except (KeyError, ValueError, TypeError) as exc:
                broken.append(f"{entry.id!r} -> {string!r}: {exc}")
        broken.extend(f"{entry.id!r}: {error}" for error in entry.check(_po(language)))
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalog_is_the_source_catalog(language: str) -> None:
    """The .mo files are committed (the wheel ships them without a build step): each must
    say what its .po says. After editing a .po, run `make translations`."""
    folder = CATALOGS / language / "LC_MESSAGES"
    with open(folder / "messages.mo", "rb") as f:
        shipped = read_mo(f)
    fresh = BytesIO()
    write_mo(fresh, _po(language))
    fresh.seek(0)
    expected = read_mo(fresh)
    assert _entries(shipped) == _entries(expected), (
        f"{folder / 'messages.mo'} is out of date: run `make translations`"
    )


def _entries(catalog: Catalog) -> dict[object, object]:
    def plain(value: object) -> object:
        return tuple(value) if isinstance(value, list | tuple) else value

    return {plain(m.id): plain(m.string) for m in catalog if m.id}


def test_every_signup_message_is_marked_for_the_catalogs() -> None:
    """course.subscriptions writes its validation messages in English; the pages translate
    them through course.i18n.SIGNUP_MESSAGES, which must list each one (or a pattern)."""
    tree = ast.parse((REPO / "course" / "subscriptions.py").read_text())
    messages = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Subscript)
            and isinstance(node.targets[0].value, ast.Name)
            and node.targets[0].value.id == "errors"
        ):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                messages.add(value.value)
            elif isinstance(value, ast.JoinedStr):
                messages.add(ast.unparse(value))
    assert messages
    for message in messages:
        if message.startswith("f"):  # an f-string: one of the known patterns
            sample = re.sub(r"\{[^}]*\}", "7", message[2:-1])
            assert i18n.translate_message(sample, "de") != sample, message
        else:
            assert message in i18n.SIGNUP_MESSAGES, message


def test_every_crisis_text_is_in_the_catalogs() -> None:
    """The crisis data's words ("112 (police 110)", "for women") are translated too."""
    catalog = _po("de")
    texts = data_messages(load_resources())
    assert "112 (police 110)" in texts and "for women" in texts
    assert all(catalog.get(text) is not None and catalog.get(text).string for text in texts)


# -- dates, languages, attributes ----------------------------------------------------------


def test_dates_read_in_the_readers_language_and_time_zone() -> None:
    tuesday = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
    assert i18n.local_datetime(tuesday, "Europe/Berlin", "de") == "Dienstag, 1. Dezember, 08:00"
    assert i18n.local_datetime(tuesday, "Europe/Berlin", "en") == "Tuesday 1 December, 08:00"
    assert i18n.local_datetime(tuesday, "America/New_York", "de").startswith("Dienstag, 1.")
    assert i18n.local_datetime(None, "UTC", "de") == ""


@pytest.mark.parametrize(
    ("code", "language"),
    [("de", "de"), ("de-AT", "de"), ("de_CH", "de"), ("en", "en"), ("xx", "en"), ("", "en")],
)
def test_course_languages_fall_back_sensibly(code: str, language: str) -> None:
    assert i18n.language_for(code) == language


def test_text_direction() -> None:
    assert i18n.text_direction("de") == "ltr"
    assert i18n.text_direction("en") == "ltr"


# -- two readers, two languages, at the same time -----------------------------------------------

#: Words that give English away, and words that give German away (whole words, lower case).
ENGLISH = {
    "the", "and", "you", "your", "please", "lesson", "lessons", "course", "with", "this",
    "that", "for", "from", "here", "unsubscribe", "progress", "day", "of", "call", "help",
    "now", "if", "book", "session", "thank", "data",
}  # fmt: skip
GERMAN = {
    "und",
    "sie",
    "ihre",
    "ihr",
    "lektion",
    "der",
    "die",
    "das",
    "kurs",
    "bitte",
    "tag",
    "von",
    "ihnen",
    "wie",
}
PRACTICE = "Praxis Lindenhof"  # a name that is neither language's giveaway


class _Text(HTMLParser):
    """The visible words of a page or an HTML email (no scripts, styles or URLs)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._foreign: list[str] = []
        self.lang: str | None = None
        self.dir: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "style", "title"):
            self._skip += 1
        if tag == "html":
            self.lang, self.dir = found.get("lang"), found.get("dir")
        elif (found.get("lang") and found.get("lang") != self.lang) or (
            tag == "select" and found.get("id") == "timezone"
        ):
            # Another course's title, marked as another language, or the time zone
            # picker's place names ("Isle of Man"): not the page's own words.
            self._foreign.append(tag)
            self._skip += 1
        elif self._foreign and tag == self._foreign[-1]:
            self._foreign.append(tag)  # the same tag nested inside: count it
        for name, value in attrs:
            if name in ("aria-label", "placeholder") and value:
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "title"):
            self._skip -= 1
        if self._foreign and tag == self._foreign[-1]:
            self._foreign.pop()
            if not self._foreign or self._foreign[-1] != tag:
                self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


def words(text: str) -> set[str]:
    text = re.sub(r"https?://\S+|\S+@\S+|www\.\S+", " ", text)
    return {w.lower() for w in re.findall(r"[^\W\d_]+", text)}


def assert_german(text: str, where: str) -> None:
    found = words(text) & ENGLISH
    assert not found, f"English in {where}: {sorted(found)}"
    assert words(text) & GERMAN, f"no German in {where}"


def assert_english(text: str, where: str) -> None:
    found = words(text) & GERMAN
    assert not found, f"German in {where}: {sorted(found)}"
    assert words(text) & ENGLISH, f"no English in {where}"


def assert_page(html: str, language: str, where: str) -> None:
    page = visible(html)
    assert page.lang == language, f"{where}: lang={page.lang!r}"
    assert page.dir == "ltr", where
    text = " ".join(page.parts)
    (assert_german if language == "de" else assert_english)(text, where)


def assert_mail(data: bytes, language: str, where: str) -> None:
    check = assert_german if language == "de" else assert_english
    check(str(parse(data)["Subject"]), f"{where} subject")
    check(text_part(data), f"{where} text part")
    assert_page(html_part(data), language, f"{where} HTML part")


@pytest.fixture
def config(tmp_path: Path, sqlite_url: str) -> dict[str, Any]:
    return make_config(
        tmp_path,
        sqlite_url,
        PRACTICE_NAME=PRACTICE,
        MAIL_FROM=f"{PRACTICE} <kurs@lindenhof.example.org>",
    )


def _tick(app: Flask) -> None:
    s = app.extensions["course"]
    Sender(s.settings, s.sessions, OutboxTransport(s.settings.mail_url[7:])).tick()


def _mail_to(app: Flask, address: str) -> list[bytes]:
    settings = app.extensions["course"].settings
    return [m for m in outbox_messages(settings) if address in str(parse(m)["To"])]


def test_an_english_and_a_german_reader_each_get_their_own_language(
    app: Flask, client: FlaskClient, runner: CourseRunner
) -> None:
    imported = runner.invoke(["courses", "import", str(REPO / "lessons" / "de"), "--publish"])
    assert imported.exit_code == 0, imported.output
    readers = {
        "en": ("ana@example.com", "feeling-secure", "Europe/London"),
        "de": ("jonas@example.de", "sicher-in-der-beziehung", "Europe/Berlin"),
    }
    # The signup pages, each in its course's language.
    for language, (_address, slug, _tz) in readers.items():
        page = client.get(f"/c/{slug}")
        assert page.status_code == 200
        assert_page(page.get_data(as_text=True), language, f"{language} signup page")
    # Both sign up and confirm, interleaved: one sender tick serves both languages.
    for _address, slug, tz in readers.values():
        answer = client.post("/subscribe", json={"email": _address, "course": slug, "timezone": tz})
        assert answer.status_code == 202
    _tick(app)
    for language, (address, _slug, _tz) in readers.items():
        (confirmation,) = _mail_to(app, address)
        assert_mail(confirmation, language, f"{language} confirmation")
        confirmed = confirm_like_a_person(client, link(confirmation, "confirm"))
        assert_page(confirmed.get_data(as_text=True), language, f"{language} confirmed page")
    _tick(app)
    for language, (address, _slug, _tz) in readers.items():
        lesson1 = _mail_to(app, address)[-1]
        assert_mail(lesson1, language, f"{language} lesson 1")
        subject = str(parse(lesson1)["Subject"])
        assert subject.startswith("Tag 1 von 5" if language == "de" else "Day 1 of 5")
        # The reader's pages: a check-in, "My progress", pause, unsubscribe, done, view.
        for path in ("checkin", "me", "pause", "unsubscribe", "done", "view"):
            page = client.get(local_path(link(lesson1, path)))
            assert page.status_code == 200, path
            assert_page(page.get_data(as_text=True), language, f"{language} /{path}/")
        # A flash-like error on the reader's page (an out-of-range pause) is translated.
        me = local_path(link(lesson1, "me"))
        refused = client.post(f"{me}/snooze", data={"until_date": "1999-01-01"})
        assert refused.status_code == 400
        assert_page(refused.get_data(as_text=True), language, f"{language} refused pause")
    # The German progress page tells the next lesson's time in German, in Berlin time.
    de_lesson = _mail_to(app, readers["de"][0])[-1]
    page = client.get(local_path(link(de_lesson, "me"))).get_data(as_text=True)
    assert re.search(
        r"(Montag|Dienstag|Mittwoch|Donnerstag|Freitag|Samstag|Sonntag), \d+\. \w+, 08:00", page
    ), page
    # A bad link (no reader to go by) is the default language; that is English.
    bad = client.get("/me/not-a-token")
    assert visible(bad.get_data(as_text=True)).lang == "en"
    with app.extensions["course"].sessions() as s:
        assert {sub.email for sub in s.scalars(select(Subscriber))} == {
            address for address, _slug, _tz in readers.values()
        }
        # Each consent record keeps the wording that reader's form showed, in their language.
        kept = {
            sub.email: s.get(ConsentText, sub.consent_text_hash)
            for sub in s.scalars(select(Subscriber))
        }
        assert kept["ana@example.com"].text.startswith("We'll send you a confirmation email")
        german = kept["jonas@example.de"].text
        assert german != kept["ana@example.com"].text
        assert_german(german, "the German consent wording")


def test_the_german_form_shows_german_errors_and_leads_to_a_german_thanks_page(
    app: Flask, client: FlaskClient, runner: CourseRunner
) -> None:
    runner.invoke(["courses", "import", str(REPO / "lessons" / "de"), "--publish"])
    page = client.get("/c/sicher-in-der-beziehung").get_data(as_text=True)
    form = forms(page)[0]
    form.fields["email"] = "kein-at-zeichen"
    refused = client.post(form.action, data=form.fields)
    assert refused.status_code == 400
    html = refused.get_data(as_text=True)
    assert_page(html, "de", "form with errors")
    assert "Das sieht nicht nach einer gültigen E-Mail-Adresse aus." in html
    form = forms(html)[0]
    form.fields["email"] = "mila@example.de"
    sent = client.post(form.action, data=form.fields)
    assert sent.status_code == 303
    thanks = client.get(sent.headers["Location"])
    assert_page(thanks.get_data(as_text=True), "de", "thanks page")
    # An English visitor's thanks page stays English.
    english = app.test_client()
    form = forms(english.get("/c/feeling-secure").get_data(as_text=True))[0]
    form.fields["email"] = "lee@example.com"
    sent = english.post(form.action, data=form.fields)
    assert_page(english.get(sent.headers["Location"]).get_data(as_text=True), "en", "thanks")


def test_a_form_error_keeps_what_the_visitor_typed_escaped(
    app: Flask, client: FlaskClient, runner: CourseRunner
) -> None:
    """Translating a message must not make it markup: the email validator's message quotes
    what was typed."""
    form = forms(client.get("/c/feeling-secure").get_data(as_text=True))[0]
    form.fields["email"] = "<b>x</b>@@example.com"
    html = client.post(form.action, data=form.fields).get_data(as_text=True)
    assert "<b>x</b>" not in html


# -- the admin: each staff member's own language -------------------------------------------


def test_each_staff_member_chooses_the_admins_language(app: Flask) -> None:
    from course.operators import Role
    from tests.test_roles import add_staff, form_on, staff_client

    add_staff(app, "lena@lindenhof.example.org", Role.OWNER)
    add_staff(app, "sam@lindenhof.example.org", Role.THERAPIST)
    lena = staff_client(app, "lena@lindenhof.example.org")
    sam = staff_client(app, "sam@lindenhof.example.org")
    page = lena.get("/admin/subscribers")
    assert visible(page.get_data(as_text=True)).lang == "en"  # English until chosen
    form = form_on(page, "/admin/language")
    assert form.fields["next"].startswith("/admin/subscribers")
    chosen = lena.post("/admin/language", data={**form.fields, "language": "de"})
    assert chosen.status_code == 303
    assert chosen.headers["Location"].startswith("/admin/subscribers")
    german = lena.get("/admin/").get_data(as_text=True)
    assert visible(german).lang == "de"
    assert ">Teilnehmende</a>" in german and ">Abmelden</button>" in german
    assert "Adresse oder Name suchen" in lena.get("/admin/subscribers").get_data(as_text=True)
    assert "<h1>Braucht Aufmerksamkeit</h1>" in lena.get("/admin/care").get_data(as_text=True)
    assert "<h1>Protokoll</h1>" in lena.get("/admin/audit").get_data(as_text=True)
    # The choice is the account's: another browser of the same person gets it too, and
    # another staff member keeps theirs.
    again = staff_client(app, "lena@lindenhof.example.org").get("/admin/")
    assert visible(again.get_data(as_text=True)).lang == "de"
    english = sam.get("/admin/").get_data(as_text=True)
    assert visible(english).lang == "en" and ">Subscribers</a>" in english
    # Only a language there is, and only back into the admin.
    form = form_on(sam.get("/admin/"), "/admin/language")
    refused = sam.post("/admin/language", data={**form.fields, "language": "xx"})
    assert refused.status_code == 400
    away = sam.post(
        "/admin/language", data={**form.fields, "language": "de", "next": "//evil.example/"}
    )
    assert away.headers["Location"] == "/admin/"


# -- every email, in each language -----------------------------------------------------------


@pytest.fixture
def renderer(app: Flask) -> Any:
    return app.extensions["course"].renderer


EMAILS = [
    ("confirm", 1, {}),
    ("confirm", 1, {"known": True}),
    *[("lesson", key, {}) for key in range(1, 6)],
    ("completion", 0, {}),
    ("followup", 0, {}),
]


@pytest.mark.parametrize(("kind", "key", "extra"), EMAILS)
@pytest.mark.parametrize("language", ["en", "de"])
def test_every_email_is_in_its_courses_language(
    renderer: Any, kind: str, key: int, extra: dict[str, Any], language: str
) -> None:
    from course.courses import folder_view
    from course.render import Reader

    folder = REPO / "lessons" / ("de" if language == "de" else "")
    course = folder_view(folder)[0]
    assert course.language == language
    reader = Reader("pub-1", "jo@example.org", "Jo", "DE" if language == "de" else "GB")
    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    data = renderer.build(kind, key, reader, course, now, **extra)
    assert_mail(data, language, f"{language} {kind} {key}")
    assert ("Hallo Jo," if language == "de" else "Hi Jo,") in text_part(data)


def test_the_email_cache_keeps_languages_apart(renderer: Any) -> None:
    """Two courses that differ only in language (same id, version and title) never share
    a compiled email: the cache key names the language."""
    from dataclasses import replace

    from course.courses import folder_view
    from course.render import Reader

    english = replace(folder_view(REPO / "lessons")[0], version_id=7)
    german = replace(english, language="de")
    reader = Reader("pub-1", "jo@example.org", None, "DE")
    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    first = text_part(renderer.build("lesson", 1, reader, english, now))
    second = text_part(renderer.build("lesson", 1, reader, german, now))
    assert "Day 1 of 5" in first and "Tag 1 von 5" not in first
    assert "Tag 1 von 5" in second and "Day 1 of 5" not in second
    assert "Hello," in first and "Hallo," in second
    assert text_part(renderer.build("lesson", 1, reader, english, now)) == first
