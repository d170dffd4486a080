"""Crisis resources that fit the reader's country.

Every email and page shows where to turn in a hard moment. The lines differ by country, so
the package ships a table of them (``course/data/crisis_resources.json``, found through
:mod:`importlib.resources`), and a practice can put its own file of the same shape on top
(``COURSE_CRISIS_RESOURCES_FILE``): an entry for a country replaces the shipped one
entirely, a new country is added. The entry with the code :data:`FALLBACK` (``"XX"``, a code
ISO 3166 never assigns to a country) is the worldwide fallback for every other reader.

The reader's country is guessed from the time zone given at signup
(:func:`country_for_timezone`, from the tz database's own ``zone.tab``), and the reader can
change it. See ``docs/crisis-resources.md``.

Nothing here touches Flask or the database.
"""

from __future__ import annotations

import json
import re
import reprlib
import textwrap
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

DATA_PACKAGE = "course.data"
DATA_FILE = "crisis_resources.json"
FALLBACK = "XX"
"""The worldwide entry: shown when the reader's country is unknown, not listed, or not shown."""

# What each field must be, for the error messages (keyed by field; "[]" for a list's items).
# A field not listed is a text field.
_RULES = {
    "countries": "must be a list of country entries",
    "country": "must be an ISO 3166-1 alpha-2 code in capitals (e.g. 'DE'), "
    f"or {FALLBACK!r} for the worldwide fallback",
    "crisis_lines": "must be a list of lines (at least one)",
    "domestic_abuse": "must be a list of lines (it may be empty)",
    "source": "must be an https:// URL or a list of them",
    "source[]": "must be an https:// URL",
    "url": "must be an https:// URL, or null for none",
    "checked": "must be a date as YYYY-MM-DD",
    "verified_online": "must be true or false",
    "languages": "must be a list of language codes",
    "languages[]": "must be a language code such as 'de'",
    "phone": "must be a non-empty string, or null for none",
    "text": "must be a non-empty string, or null for none",
}
_TEXT_RULE = "must be a non-empty string"
# Codes people write that ISO 3166-1 does not use, with the one they mean.
_CODE_HINTS = {"UK": "GB", "EL": "GR"}
# Printing a wrong value helps find it; a whole misplaced object would drown the sentence.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120


class CrisisDataError(ValueError):
    """A crisis-resources file that cannot be used; the message names the file and entry."""


def _known_country(code: str) -> str:
    known = zone_tables().countries
    if code != FALLBACK and known and code not in known:  # no iso3166.tab: trust the format
        hint = f" (did you mean {_CODE_HINTS[code]!r}?)" if code in _CODE_HINTS else ""
        raise ValueError(f"is not an ISO 3166-1 alpha-2 code{hint}")
    return code


def _not_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    # Not Field(min_length=1): pydantic would also call a list "too short" whose only item is
    # broken, which hides the real problem behind a wrong one.
    if not items:
        raise ValueError("must not be empty")
    return items


def _plain_day(value: object) -> object:
    # pydantic alone also reads timestamps and date-times as dates; the file wants a plain day.
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    raise ValueError(_RULES["checked"])


# Python's re (in _STRICT), so that "\s" means what str.isspace() means and "\Z" is the end.
_NOT_BLANK = StringConstraints(pattern=r"\S")
_Text = Annotated[str, _NOT_BLANK, AfterValidator(str.strip)]
# A pattern, not HttpUrl: HttpUrl would rewrite the address (adding "/", changing the host's
# spelling), and readers should see it exactly as the practice wrote it.
_HttpsUrl = Annotated[str, StringConstraints(pattern=r"^(?i:https)://[^/?#\s]+\S*\Z")]
_Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}\Z"), AfterValidator(_known_country)]
_STRICT = ConfigDict(frozen=True, extra="forbid", regex_engine="python-re")


class Line(BaseModel):
    """One helpline or directory: how to reach it, and when."""

    model_config = _STRICT

    name: _Text
    phone: _Text | None
    text: _Text | None
    """An SMS/chat number (``"988"``) or a short instruction (``"START to 88788"``,
    ``"WhatsApp 600 000 016"``); a bare number or keyword is read as "text ..."."""
    url: _HttpsUrl | None
    hours: _Text
    languages: tuple[Annotated[str, _NOT_BLANK], ...] = ()
    note: _Text | None = None
    """Who or where it is for, e.g. ``"Scotland"`` or ``"for young people"``."""

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if not (self.phone or self.text or self.url):
            raise ValueError("needs at least one of 'phone', 'text' or 'url'")
        return self


class CountryResources(BaseModel):
    """A country's emergency number, crisis lines and domestic-abuse lines."""

    model_config = _STRICT

    country: _Country
    name: _Text
    emergency: _Text
    crisis_lines: Annotated[tuple[Line, ...], AfterValidator(_not_empty)]
    domestic_abuse: tuple[Line, ...]
    # One source may be written without the list around it.
    source: Annotated[
        tuple[_HttpsUrl, ...],
        BeforeValidator(lambda value: [value] if isinstance(value, str) else value),
        AfterValidator(_not_empty),
    ]
    checked: Annotated[date, BeforeValidator(_plain_day)]
    verified_online: StrictBool  # pydantic would otherwise read "yes" or 1 as true
    notes: _Text | None = None

    @property
    def is_fallback(self) -> bool:
        """Whether this is the worldwide entry."""
        return self.country == FALLBACK


class _File(BaseModel):
    model_config = _STRICT

    about: Any = None  # free text for the people who maintain the file
    countries: list[CountryResources]


# --- loading and validating ------------------------------------------------------------


def load_resources(override_file: Path | None = None) -> dict[str, CountryResources]:
    """The shipped resources by country code, with a practice's own file merged on top.

    An entry in ``override_file`` replaces the shipped entry for its country entirely (no
    field-by-field merge: a half-updated country would mix old and new numbers); a country
    the shipped file lacks is added. Raises :class:`CrisisDataError` for a broken file.
    """
    merged = dict(_shipped())
    if override_file is not None:
        try:
            raw = Path(override_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CrisisDataError(
                f"{override_file}: cannot read the crisis-resources file: {exc.strerror or exc}"
            ) from exc
        merged.update(parse_resources(raw, str(override_file)))
    if FALLBACK not in merged:  # only possible with a broken shipped file
        raise CrisisDataError(f"no worldwide fallback entry (country {FALLBACK!r})")
    return merged


@lru_cache(maxsize=1)
def _shipped() -> dict[str, CountryResources]:
    raw = files(DATA_PACKAGE).joinpath(DATA_FILE).read_text(encoding="utf-8")
    shipped = parse_resources(raw, f"{DATA_PACKAGE}/{DATA_FILE}")
    if FALLBACK not in shipped:
        raise CrisisDataError(f"{DATA_PACKAGE}/{DATA_FILE}: no entry for country {FALLBACK!r}")
    return shipped


def parse_resources(raw: str, origin: str) -> dict[str, CountryResources]:
    """Parse and validate the JSON text of a resources file (``origin`` names it in errors).

    The shape: ``{"about": "...", "countries": [entry, ...]}`` (``about`` is optional).
    """

    # json keeps the last of two equal keys without a word; in this file that hides a typo.
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise CrisisDataError(f"{origin}: the key {key!r} appears twice")
            result[key] = value
        return result

    try:
        data = json.loads(raw, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise CrisisDataError(
            f"{origin}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    try:
        entries = _File.model_validate(data).countries
    except ValidationError as exc:
        problems = [f"{origin}: {_sentence(error, data)}" for error in exc.errors()]
        raise CrisisDataError("\n".join(problems)) from exc
    result: dict[str, CountryResources] = {}
    for index, entry in enumerate(entries, start=1):
        if entry.country in result:
            raise CrisisDataError(
                f"{origin}: entry {index} ({entry.country}): country {entry.country} "
                "appears more than once"
            )
        result[entry.country] = entry
    return result


def _sentence(error: ErrorDetails, data: Any) -> str:
    """One problem pydantic found, in words: where it is (entry, line), the field, the rule."""
    rest = list(error["loc"])
    where = []
    # Name the entry by its country and the line by its name, as the practice wrote them.
    if rest[:1] == ["countries"] and len(rest) > 1:
        node = data["countries"][rest[1]]
        where.append(f"entry {int(rest[1]) + 1}{_named(node, 'country')}")
        rest = rest[2:]
        if len(rest) > 1 and rest[0] in ("crisis_lines", "domestic_abuse"):
            node = node[rest[0]][rest[1]]
            where.append(f"{rest[0]}[{rest[1]}]{_named(node, 'name')}")
            rest = rest[2:]
    name = "".join(f"[{part}]" if isinstance(part, int) else str(part) for part in rest)
    kind = error["type"]
    reason = str(error["ctx"]["error"]) if kind == "value_error" else ""
    if kind == "missing":
        null = " (use null if there is none)" if name in ("phone", "text", "url") else ""
        problem = f"{name!r} is missing{null}"
    elif kind == "extra_forbidden":
        problem = f"{name!r} is not a known field (a typo?)"
    elif not name:  # the entry or line as a whole
        problem = reason or ("expected an object" + ("" if where else ' {"countries": [...]}'))
    else:
        rule = reason or _RULES.get(f"{rest[0]}[]" if len(rest) > 1 else name, _TEXT_RULE)
        problem = f"{name!r} {rule}; got {_shown(error['input'])}"
    return ": ".join([", ".join(where), problem] if where else [problem])


def _named(node: object, key: str) -> str:
    value = node.get(key) if isinstance(node, dict) else None
    return f" ({value})" if isinstance(value, str) and value else ""


def _shown(value: object) -> str:
    # JSON's words, not Python's: the practice wrote null and true, not None and True.
    return json.dumps(value) if value is None or isinstance(value, bool) else _REPR.repr(value)


# --- choosing ----------------------------------------------------------------------------


def resources_for(
    country: str | None,
    resources: Mapping[str, CountryResources],
    shown: frozenset[str] | None = None,
) -> CountryResources:
    """The resources for a reader in ``country``: its own entry when there is one (and, if
    the practice limits the countries shown, it is in ``shown``), else the worldwide one."""
    code = (country or "").strip().upper()
    if code in resources and (shown is None or code in {c.upper() for c in shown}):
        return resources[code]
    return resources[FALLBACK]


def stale(
    resources: Mapping[str, CountryResources], today: date, max_age_days: int = 365
) -> list[str]:
    """The countries whose entry was last checked more than ``max_age_days`` ago, sorted."""
    return sorted(
        code for code, entry in resources.items() if (today - entry.checked).days > max_age_days
    )


def unverified(resources: Mapping[str, CountryResources]) -> list[str]:
    """The countries whose entry has not been checked against its source online, sorted."""
    return sorted(code for code, entry in resources.items() if not entry.verified_online)


def countries(
    resources: Mapping[str, CountryResources], *, include_fallback: bool = False
) -> list[tuple[str, str]]:
    """``(code, name)`` of the listed countries sorted by name, for a picker. The worldwide
    entry is left out unless ``include_fallback`` (then it comes last)."""
    listed = sorted(
        ((code, entry.name) for code, entry in resources.items() if code != FALLBACK),
        key=lambda pair: (pair[1].casefold(), pair[0]),
    )
    if include_fallback and FALLBACK in resources:
        listed.append((FALLBACK, resources[FALLBACK].name))
    return listed


# --- plain text ----------------------------------------------------------------------------

_TEXT_VERBS = ("text ", "sms ", "whatsapp ", "chat ", "message ", "send ")
_NUMBER_SPACE = re.compile(r"(?<=\d) (?=\d)")
_KEEP = "\x00"


def _without_verb(value: str, verb: str) -> str:
    return value[len(verb) :].lstrip() if value.lower().startswith(verb) else value


def _same(message: str) -> str:
    return message


def how_to_reach(line: Line, _: Callable[[str], str] = _same) -> str:
    """``"call 116 123"``, ``"call or text 988"``, ``"call 1-800-799-7233 or text START to
    88788"``; empty for a website-only line. ``_`` translates (course.i18n.gettext_for)."""
    phone = _without_verb(line.phone, "call ") if line.phone else None
    text = line.text
    if phone and text and phone == _without_verb(text, "text "):
        return _("call or text %(number)s") % {"number": phone}
    ways = []
    if phone:
        ways.append(_("call %(number)s") % {"number": phone})
    if text:
        ways.append(
            text if text.lower().startswith(_TEXT_VERBS) else _("text %(what)s") % {"what": text}
        )
    return _(" or ").join(ways)


def describe(line: Line, _: Callable[[str], str] = _same) -> str:
    """One line in words: name, how to reach it, hours (and who it is for), website."""
    words = line.name
    how = how_to_reach(line, _)
    if how:
        words += f", {how}"
    words += " (" + "; ".join(part for part in (line.hours, line.note) if part) + ")"
    if line.url:
        words += f", {line.url}"
    return words


def text_lines(
    entry: CountryResources, width: int = 72, _: Callable[[str], str] = _same
) -> list[str]:
    """The country's resources for the text part of an email, wrapped to ``width`` columns:
    the emergency number, the first crisis line and the first domestic-abuse line.

    Phone numbers and URLs are never split across lines (a URL longer than ``width`` gets a
    line of its own); continuation lines are indented by two spaces. ``_`` translates the
    words around them (the entry's own texts are translated by :func:`localized`).
    """
    emergency = _without_verb(entry.emergency, "call ")
    paragraphs = [_("In an emergency, call %(number)s.") % {"number": emergency}]
    paragraphs.append(
        _("To talk to someone now: %(line)s") % {"line": describe(entry.crisis_lines[0], _)}
    )
    if entry.domestic_abuse:
        paragraphs.append(
            _("If you are not safe at home: %(line)s")
            % {"line": describe(entry.domestic_abuse[0], _)}
        )
    lines: list[str] = []
    for paragraph in paragraphs:
        wrapped = textwrap.wrap(
            _NUMBER_SPACE.sub(_KEEP, paragraph),
            width=width,
            subsequent_indent="  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.extend(line.replace(_KEEP, " ") for line in wrapped)
    return lines


#: The fields of an entry that are words for the reader (not names, numbers or links):
#: translated by :func:`localized`, and extracted into the catalogs (course.i18n).
TRANSLATED_FIELDS = ("emergency", "phone", "text", "hours", "note")


def localized(entry: CountryResources, _: Callable[[str], str]) -> CountryResources:
    """``entry`` with its words in the reader's language (``"112 (police 110)"`` reads
    ``"112 (Polizei 110)"``); a text the catalog does not have stays as it is."""

    def line(item: Line) -> Line:
        changes = {
            name: _(value)
            for name in TRANSLATED_FIELDS
            if isinstance(value := getattr(item, name, None), str) and value
        }
        return item.model_copy(update=changes)

    return entry.model_copy(
        update={
            "emergency": _(entry.emergency),
            "crisis_lines": tuple(line(item) for item in entry.crisis_lines),
            "domestic_abuse": tuple(line(item) for item in entry.domestic_abuse),
        }
    )


def data_messages(resources: Mapping[str, CountryResources]) -> list[str]:
    """Every text in the crisis data that :func:`localized` translates (those with words
    in them, not bare numbers), for the catalogs."""
    found: dict[str, None] = {}
    for entry in resources.values():
        found[entry.emergency] = None
        for item in (*entry.crisis_lines, *entry.domestic_abuse):
            for name in TRANSLATED_FIELDS:
                value = getattr(item, name, None)
                if isinstance(value, str) and value:
                    found[value] = None
    return [text for text in found if re.search(r"[^\W\d_]", text)]


# --- time zones ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneTables:
    """What the tz database says about countries: the zone's own country (``zone.tab``),
    the countries overlapping a zone (``zone1970.tab``, first is the most populous), the
    links (old and alias names, from ``tzdata.zi``) and the ISO 3166 codes
    (``iso3166.tab``)."""

    zone_country: dict[str, str] = field(default_factory=dict)
    zone_countries: dict[str, tuple[str, ...]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    countries: dict[str, str] = field(default_factory=dict)

    def canonical(self, tz: str) -> str | None:
        """The zone name as the tables spell it (exact first, then ignoring case)."""
        for table in (self.zone_country, self.zone_countries, self.links):
            if tz in table:
                return tz
        folded = tz.casefold()
        for table in (self.zone_country, self.zone_countries, self.links):
            for name in table:
                if name.casefold() == folded:
                    return name
        return None


def tz_data_dirs() -> list[Traversable]:
    """Where the tz database's tables may be, in the order :mod:`zoneinfo` looks for zones:
    the system folders of ``zoneinfo.TZPATH``, then the ``tzdata`` package if installed."""
    dirs: list[Traversable] = [Path(path) for path in zoneinfo.TZPATH]
    try:
        dirs.append(files("tzdata.zoneinfo"))
    except ImportError:
        pass
    return dirs


def read_zone_tables(dirs: Iterable[Traversable]) -> ZoneTables:
    """Read each table from the first of ``dirs`` that has it (missing ones stay empty)."""
    texts: dict[str, str] = {}
    wanted = ("zone.tab", "zone1970.tab", "tzdata.zi", "iso3166.tab")
    for folder in dirs:
        for name in wanted:
            if name in texts:
                continue
            try:
                candidate = folder.joinpath(name)
                if candidate.is_file():
                    texts[name] = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
    tables = ZoneTables()
    for row in _rows(texts.get("zone.tab", "")):
        if len(row) >= 3:
            tables.zone_country[row[2]] = row[0]
    for row in _rows(texts.get("zone1970.tab", "")):
        if len(row) >= 3:
            tables.zone_countries[row[2]] = tuple(row[0].split(","))
    for row in _rows(texts.get("iso3166.tab", "")):
        if len(row) >= 2:
            tables.countries[row[0]] = row[1]
    for text_line in texts.get("tzdata.zi", "").splitlines():
        parts = text_line.split()
        if len(parts) == 3 and parts[0] == "L":
            tables.links[parts[2]] = parts[1]
    return tables


def _rows(text: str) -> list[list[str]]:
    return [
        line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]


@lru_cache(maxsize=1)
def zone_tables() -> ZoneTables:
    """The tables of the tz database this machine uses (read once)."""
    return read_zone_tables(tz_data_dirs())


def country_for_timezone(tz: str, *, tables: ZoneTables | None = None) -> str | None:
    """The country of an IANA time zone (``"Europe/Berlin"`` → ``"DE"``), or None for
    ``UTC``, ``Etc/*``, unknown names, and when no tz tables can be found.

    A zone's own country comes from ``zone.tab``; a zone only in ``zone1970.tab`` (which
    lists every country sharing it, e.g. ``Europe/Zurich`` as CH,DE,LI) gives the first, the
    most populous; an old or alias name (``US/Eastern``) is followed to the zone it links to.
    """
    tables = tables if tables is not None else zone_tables()
    name = tables.canonical(tz.strip()) if tz else None
    for _ in range(8):  # links may chain; never loop forever on a broken table
        if name is None or name.startswith("Etc/") or name in ("UTC", "GMT", "Factory"):
            return None
        if name in tables.zone_country:
            return tables.zone_country[name]
        if name in tables.zone_countries:
            return tables.zone_countries[name][0]
        name = tables.links.get(name)
    return None
