"""Which language a person reads, and the translations, dates and texts in it.

Every reader-facing string is a gettext message (``_("...")`` in code and templates),
extracted into ``course/translations/messages.pot`` and translated in
``course/translations/<lang>/LC_MESSAGES/messages.po`` (see docs/translating.md). English is
the source language: it needs no catalog.

Who reads which language:

- A reader reads the language of the course they came from (``courses.language``): its
  emails and its pages. Views name the course with :func:`use_course_language`.
- Staff read the language they chose in the admin (``course.web.admin``).
- Everyone else (a bad link, the list of courses) reads English.

Emails are built outside Flask (the sender needs no app), so :func:`translations` loads the
catalogs with Babel directly; Flask-Babel uses the same folder for the pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_skeleton, format_time
from babel.support import NullTranslations, Translations

if TYPE_CHECKING:
    from flask import Flask

    from course.config import Settings

#: The source language of every message, and the language of anyone we know nothing about.
DEFAULT_LANGUAGE = "en"
TRANSLATIONS_PACKAGE = "course.translations"
DOMAIN = "messages"

#: How a reader's date and time read in each language ("Dienstag, 1. Dezember, 08:00").
#: A language not listed gets CLDR's own full weekday-day-month form (format_skeleton).
_DATETIME_PATTERNS = {
    "en": "EEEE d MMMM, HH:mm",
    "de": "EEEE, d. MMMM, HH:mm",
}


def N_(message: str) -> str:  # noqa: N802 - the conventional name for "mark only"
    """Mark ``message`` for extraction without translating it (it is translated where it
    is shown, in the reader's language)."""
    return message


def translations_dir() -> Path:
    """The folder of compiled catalogs (shipped in the wheel as package data)."""
    return Path(str(files(TRANSLATIONS_PACKAGE)))


@lru_cache(maxsize=1)
def available_languages() -> tuple[str, ...]:
    """English and every language with a compiled catalog, in that order."""
    found = sorted(
        path.parent.parent.name for path in translations_dir().glob(f"*/LC_MESSAGES/{DOMAIN}.mo")
    )
    return (DEFAULT_LANGUAGE, *(code for code in found if code != DEFAULT_LANGUAGE))


def language_for(code: str | None) -> str:
    """The language we can show for a course or person whose language is ``code``:
    ``de-AT`` or ``de_CH`` read German, an unknown one reads English."""
    if not code:
        return DEFAULT_LANGUAGE
    normalised = code.replace("-", "_")
    languages = available_languages()
    if normalised in languages:
        return normalised
    base = normalised.split("_")[0].lower()
    return base if base in languages else DEFAULT_LANGUAGE


@lru_cache(maxsize=32)
def translations(language: str) -> NullTranslations:
    """The gettext translations of ``language`` (English: the messages as they are)."""
    language = language_for(language)
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    return Translations.load(str(translations_dir()), [language], DOMAIN)


def gettext_for(language: str) -> Callable[[str], str]:
    """``gettext`` in ``language``, for code that runs without Flask (emails, the CLI)."""
    return translations(language).gettext


def text_direction(language: str) -> str:
    """``ltr`` or ``rtl``: the ``dir`` attribute of a page or email in ``language``."""
    try:
        return str(Locale.parse(language_for(language)).text_direction)
    except (ValueError, UnknownLocaleError):
        return "ltr"


def html_lang(language: str) -> str:
    """The ``lang`` attribute for ``language`` (BCP 47: ``pt-BR``, not ``pt_BR``)."""
    return language_for(language).replace("_", "-")


def local_datetime(value: datetime | None, tz: str, language: str) -> str:
    """A time as the reader reads it, in their time zone and language:
    'Thursday 27 November, 08:00', 'Donnerstag, 27. November, 08:00'."""
    if value is None:
        return ""
    language = language_for(language)
    local = value.astimezone(ZoneInfo(tz))
    pattern = _DATETIME_PATTERNS.get(language)
    if pattern is not None:
        return str(format_datetime(local, pattern, tzinfo=local.tzinfo, locale=language))
    day = format_skeleton("MMMMEEEEd", local, tzinfo=local.tzinfo, locale=language)
    return f"{day}, {format_time(local, 'HH:mm', tzinfo=local.tzinfo, locale=language)}"


#: The crisis data's worldwide entry (course.crisis.FALLBACK), which no country list names.
WORLDWIDE = N_("Worldwide")


def country_name(code: str, language: str, default: str | None = None) -> str:
    """A country's name in ``language`` (CLDR's, through Babel); English keeps the crisis
    data's own ``default``. The worldwide entry (``XX``) is "Worldwide"."""
    language = language_for(language)
    if code == "XX" or not code:
        return gettext_for(language)(WORLDWIDE)
    if language == DEFAULT_LANGUAGE and default:
        return default
    try:
        names = Locale.parse(language).territories
    except (ValueError, UnknownLocaleError):
        return default or code
    return str(names.get(code) or default or code)


#: The time zone picker's regions (course.timezones.REGIONS) and its "Other" group.
ZONE_REGIONS = {
    "Africa": N_("Africa"),
    "America": N_("America"),
    "Antarctica": N_("Antarctica"),
    "Arctic": N_("Arctic"),
    "Asia": N_("Asia"),
    "Atlantic": N_("Atlantic"),
    "Australia": N_("Australia"),
    "Europe": N_("Europe"),
    "Indian": N_("Indian Ocean"),
    "Pacific": N_("Pacific"),
    "Other": N_("Other"),
}
N_("UTC (Coordinated Universal Time)")

ZoneGroups = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@lru_cache(maxsize=8)
def zone_groups_in(language: str) -> ZoneGroups:
    """The time zone picker's groups (course.timezones.zone_groups) in ``language``:
    regions from the catalog, places by CLDR's name for them (``Kopenhagen``)."""
    from babel.dates import get_timezone, get_timezone_location

    from course.timezones import zone_groups

    language = language_for(language)
    groups = zone_groups()
    if language == DEFAULT_LANGUAGE:
        return groups
    _ = gettext_for(language)

    def label(zone: str, english: str) -> str:
        if "/" not in zone:
            return _(english)
        try:
            city = get_timezone_location(get_timezone(zone), locale=language, return_city=True)
        except (LookupError, ValueError):
            return english
        country = english.rsplit(" – ", 1)[0] if " – " in english else None
        return f"{country} – {city}" if country else str(city)

    localized = []
    for region, zones in groups:
        labels = [(z, label(z, name)) for z, name in zones]
        # CLDR names old and new spellings alike (Kiev, Kyiv: "Kiew"): those keep theirs.
        seen = [name for _z, name in labels]
        labels = [
            (z, name if seen.count(name) == 1 else english)
            for (z, name), (_same, english) in zip(labels, zones, strict=True)
        ]
        localized.append(
            (_(ZONE_REGIONS.get(region, region)), tuple(sorted(labels, key=lambda p: p[1])))
        )
    return tuple(localized)


#: The settings whose shipped default is reader-facing English text: when the practice has
#: not changed one, readers see the default in their own language.
TRANSLATED_DEFAULTS = ("crisis_text", "notes_notice", "signup_consent_text")


def setting_text(settings: Settings, name: str, language: str) -> str:
    """The text of setting ``name`` for a reader of ``language``: the practice's own words
    as they are, or our default translated (the catalog has every default)."""
    value = str(getattr(settings, name) or "")
    default = type(settings).model_fields[name].default
    if value and value == default:
        return gettext_for(language)(value)
    return value


# The shipped defaults, marked for extraction (course.config holds the same text).
N_("If you are thinking about harming yourself, or you are not safe, please reach out now.")
N_(
    "Notes are read by the practice on working days; they are not monitored around the "
    "clock. If you need help right now, please use the crisis lines on this page."
)
N_(
    "We'll send you a confirmation email first. We only use your address for this course, "
    "never share it, and you can leave with one click at any time."
)


#: What signup validation (course.subscriptions, which stays free of translation) says,
#: marked here for the catalogs; pages translate them where they are shown
#: (:func:`translate_message`). tests/test_i18n.py fails when that module gains a message
#: that is not listed here.
SIGNUP_MESSAGES = (
    N_("must be text"),
    N_("contains characters that are not allowed"),
    N_("Please enter your email address."),
    N_("The email address must be text."),
    N_("That email address is too long."),
    N_("That email address contains characters we cannot accept."),
    N_("must be an IANA time zone name such as Europe/Berlin"),
    N_("may only contain letters, digits and . _ - : /"),
)
#: Messages with a variable part, matched by pattern: what the reader reads instead.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"must be at most (?P<limit>\d+) characters"),
        N_("must be at most %(limit)s characters"),
    ),
    # email-validator's explanation is English: other languages get a plain sentence.
    (
        re.compile(r"That doesn't look like a valid email address: .*", re.DOTALL),
        N_("That doesn't look like a valid email address."),
    ),
)


def translate_message(message: str, language: str) -> str:
    """A message that was written in English somewhere else (validation, a library), in
    ``language``: its catalog entry, a known pattern's, or as it is."""
    if not message or language_for(language) == DEFAULT_LANGUAGE:
        return message
    _ = gettext_for(language)
    found = _(message)
    if found != message:
        return found
    for pattern, replacement in _PATTERNS:
        match = pattern.fullmatch(message)
        if match:
            return _(replacement) % match.groupdict()
    return message


# --- Flask ---------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Flask-Babel over the same catalogs, with our locale selection; ``page_lang`` and
    ``page_dir`` for every template's ``<html>``."""
    from flask_babel import Babel

    Babel(
        app,
        locale_selector=page_language,
        default_translation_directories=str(translations_dir()),
        default_domain=DOMAIN,
    )

    # "lang" of a course or text in another language than the page's (lists of courses).
    app.jinja_env.filters["html_lang"] = html_lang
    # A message from elsewhere (validation), translated and still escaped: unlike ``_()``,
    # whose result Jinja marks safe, this one may carry what a visitor typed.
    app.jinja_env.filters["translated"] = lambda message: translate_message(
        str(message), page_language()
    )

    @app.context_processor
    def _language() -> dict[str, object]:
        language = page_language()
        return {"page_lang": html_lang(language), "page_dir": text_direction(language)}


def gettext(message: str, **variables: object) -> str:
    """``message`` in the page's language (Flask-Babel), with ``%(name)s`` filled in."""
    from flask_babel import gettext as flask_gettext

    return str(flask_gettext(message, **variables))


def language_choices() -> list[tuple[str, str]]:
    """``(code, name)`` of every available language, each named in itself ("Deutsch"), for
    a staff member's choice."""
    return [
        (code, str(Locale.parse(code).get_display_name(code) or code).capitalize())
        for code in available_languages()
    ]


def page_language() -> str:
    """The language of the page being built: the one a view chose (:func:`use_language`),
    else English."""
    from flask import g

    return str(g.get("page_language") or DEFAULT_LANGUAGE)


def use_language(code: str | None) -> str:
    """Build this request's page (and its messages) in ``code``'s language."""
    from flask import g
    from flask_babel import refresh

    language = language_for(code)
    if g.get("page_language") != language:
        g.page_language = language
        refresh()  # a message translated before this call must not fix the language
    return language


def use_course_language(course: object | None) -> str:
    """Build this request's page in the language of ``course`` (a PublishedCourse, or
    None: English)."""
    return use_language(getattr(course, "language", None))


# --- extraction ----------------------------------------------------------------------------


def extract_crisis_data(
    fileobj: object, keywords: object, comment_tags: object, options: object
) -> list[tuple[int, str, str, list[str]]]:
    """A Babel extractor (babel.cfg) for the crisis data: every text a reader reads in it
    (``"112 (police 110)"``, ``"for women"``), so each catalog translates them too."""
    from course.crisis import data_messages, parse_resources

    raw = fileobj.read()  # type: ignore[attr-defined]
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    resources = parse_resources(text, "crisis data")
    return [
        (1, "gettext", message, ["crisis data (course/data/crisis_resources.json)"])
        for message in data_messages(resources)
    ]
