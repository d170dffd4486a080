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
import textwrap
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DATA_PACKAGE = "course.data"
DATA_FILE = "crisis_resources.json"
FALLBACK = "XX"
"""The worldwide entry: shown when the reader's country is unknown, not listed, or not shown."""

_CODE = re.compile(r"[A-Z]{2}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LINE_FIELDS = {"name", "phone", "text", "url", "hours", "languages", "note"}
_LINE_REQUIRED = ("name", "phone", "text", "url", "hours")
_ENTRY_FIELDS = {
    "country",
    "name",
    "emergency",
    "crisis_lines",
    "domestic_abuse",
    "source",
    "checked",
    "verified_online",
    "notes",
}
_ENTRY_REQUIRED = (
    "country",
    "name",
    "emergency",
    "crisis_lines",
    "domestic_abuse",
    "source",
    "checked",
    "verified_online",
)
# Codes people write that ISO 3166-1 does not use, with the one they mean.
_CODE_HINTS = {"UK": "GB", "EL": "GR"}


class CrisisDataError(ValueError):
    """A crisis-resources file that cannot be used; the message names the file and entry."""


@dataclass(frozen=True)
class Line:
    """One helpline or directory: how to reach it, and when."""

    name: str
    phone: str | None
    text: str | None
    """An SMS/chat number (``"988"``) or a short instruction (``"START to 88788"``,
    ``"WhatsApp 600 000 016"``); a bare number or keyword is read as "text ..."."""
    url: str | None
    hours: str
    languages: tuple[str, ...] = ()
    note: str | None = None
    """Who or where it is for, e.g. ``"Scotland"`` or ``"for young people"``."""


@dataclass(frozen=True)
class CountryResources:
    """A country's emergency number, crisis lines and domestic-abuse lines."""

    country: str
    name: str
    emergency: str
    crisis_lines: tuple[Line, ...]
    domestic_abuse: tuple[Line, ...]
    source: tuple[str, ...]
    checked: date
    verified_online: bool
    notes: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.country == FALLBACK


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
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise CrisisDataError(
            f"{origin}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except _DuplicateKey as exc:
        raise CrisisDataError(f"{origin}: the key {exc.args[0]!r} appears twice") from exc
    if not isinstance(data, dict):
        raise CrisisDataError(f'{origin}: expected an object {{"countries": [...]}}')
    unknown = set(data) - {"about", "countries"}
    if unknown:
        raise CrisisDataError(f"{origin}: unknown top-level field(s): {_names(unknown)}")
    entries = data.get("countries")
    if not isinstance(entries, list):
        raise CrisisDataError(f'{origin}: "countries" must be a list of country entries')
    result: dict[str, CountryResources] = {}
    for index, item in enumerate(entries, start=1):
        entry = _entry(item, f"{origin}: entry {index}")
        if entry.country in result:
            raise CrisisDataError(
                f"{origin}: entry {index} ({entry.country}): country {entry.country} "
                "appears more than once"
            )
        result[entry.country] = entry
    return result


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _names(keys: Iterable[str]) -> str:
    return ", ".join(repr(key) for key in sorted(keys))


def _entry(item: object, where: str) -> CountryResources:
    if not isinstance(item, dict):
        raise CrisisDataError(f"{where}: expected an object")
    code = item.get("country")
    if isinstance(code, str) and code:
        where = f"{where} ({code})"
    missing = [key for key in _ENTRY_REQUIRED if key not in item]
    if missing:
        raise CrisisDataError(f"{where}: missing field(s): {_names(missing)}")
    unknown = set(item) - _ENTRY_FIELDS
    if unknown:
        raise CrisisDataError(f"{where}: unknown field(s): {_names(unknown)}")
    country = _country_code(item["country"], where)
    sources = item["source"]
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources:
        raise CrisisDataError(f"{where}: 'source' must be a URL or a non-empty list of URLs")
    verified = item["verified_online"]
    if not isinstance(verified, bool):
        raise CrisisDataError(f"{where}: 'verified_online' must be true or false")
    crisis_lines = _lines(item["crisis_lines"], f"{where}, crisis_lines")
    if not crisis_lines:
        raise CrisisDataError(f"{where}: 'crisis_lines' needs at least one line")
    return CountryResources(
        country=country,
        name=_text(item["name"], "name", where),
        emergency=_text(item["emergency"], "emergency", where),
        crisis_lines=crisis_lines,
        domestic_abuse=_lines(item["domestic_abuse"], f"{where}, domestic_abuse"),
        source=tuple(_url(url, f"source[{i}]", where) for i, url in enumerate(sources)),
        checked=_date(item["checked"], where),
        verified_online=verified,
        notes=_optional_text(item.get("notes"), "notes", where),
    )


def _country_code(value: object, where: str) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise CrisisDataError(
            f"{where}: 'country' must be an ISO 3166-1 alpha-2 code in capitals "
            f"(e.g. 'DE'), or {FALLBACK!r} for the worldwide fallback; got {value!r}"
        )
    known = zone_tables().countries
    if value != FALLBACK and known and value not in known:
        hint = f" (did you mean {_CODE_HINTS[value]!r}?)" if value in _CODE_HINTS else ""
        raise CrisisDataError(
            f"{where}: 'country' {value!r} is not an ISO 3166-1 alpha-2 code{hint}"
        )
    return value


def _lines(value: object, where: str) -> tuple[Line, ...]:
    if not isinstance(value, list):
        raise CrisisDataError(f"{where}: must be a list of lines")
    return tuple(_line(item, f"{where}[{index}]") for index, item in enumerate(value))


def _line(item: object, where: str) -> Line:
    if not isinstance(item, dict):
        raise CrisisDataError(f"{where}: expected an object")
    name = item.get("name")
    if isinstance(name, str) and name:
        where = f"{where} ({name})"
    missing = [key for key in _LINE_REQUIRED if key not in item]
    if missing:
        raise CrisisDataError(f"{where}: missing field(s): {_names(missing)} (use null for none)")
    unknown = set(item) - _LINE_FIELDS
    if unknown:
        raise CrisisDataError(f"{where}: unknown field(s): {_names(unknown)}")
    languages = item.get("languages", [])
    if not isinstance(languages, list) or not all(
        isinstance(lang, str) and lang.strip() for lang in languages
    ):
        raise CrisisDataError(f"{where}: 'languages' must be a list of language codes")
    url = item["url"]
    line = Line(
        name=_text(item["name"], "name", where),
        phone=_optional_text(item["phone"], "phone", where),
        text=_optional_text(item["text"], "text", where),
        url=None if url is None else _url(url, "url", where),
        hours=_text(item["hours"], "hours", where),
        languages=tuple(languages),
        note=_optional_text(item.get("note"), "note", where),
    )
    if not (line.phone or line.text or line.url):
        raise CrisisDataError(f"{where}: needs at least one of 'phone', 'text' or 'url'")
    return line


def _text(value: object, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CrisisDataError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _optional_text(value: object, key: str, where: str) -> str | None:
    return None if value is None else _text(value, key, where)


def _url(value: object, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise CrisisDataError(f"{where}: {key!r} must be an https URL (or null)")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or any(ch.isspace() for ch in value):
        raise CrisisDataError(f"{where}: {key!r} must be an https:// URL; got {value!r}")
    return value


def _date(value: object, where: str) -> date:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise CrisisDataError(f"{where}: 'checked' must be a date as YYYY-MM-DD; got {value!r}")


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


def how_to_reach(line: Line) -> str:
    """``"call 116 123"``, ``"call or text 988"``, ``"call 1-800-799-7233 or text START to
    88788"``; empty for a website-only line."""
    phone = _without_verb(line.phone, "call ") if line.phone else None
    text = line.text
    if phone and text and phone == _without_verb(text, "text "):
        return f"call or text {phone}"
    ways = []
    if phone:
        ways.append(f"call {phone}")
    if text:
        ways.append(text if text.lower().startswith(_TEXT_VERBS) else f"text {text}")
    return " or ".join(ways)


def describe(line: Line) -> str:
    """One line in words: name, how to reach it, hours (and who it is for), website."""
    words = line.name
    how = how_to_reach(line)
    if how:
        words += f", {how}"
    words += " (" + "; ".join(part for part in (line.hours, line.note) if part) + ")"
    if line.url:
        words += f", {line.url}"
    return words


def text_lines(entry: CountryResources, width: int = 72) -> list[str]:
    """The country's resources for the text part of an email, wrapped to ``width`` columns:
    the emergency number, the first crisis line and the first domestic-abuse line.

    Phone numbers and URLs are never split across lines (a URL longer than ``width`` gets a
    line of its own); continuation lines are indented by two spaces.
    """
    emergency = _without_verb(entry.emergency, "call ")
    paragraphs = [f"In an emergency, call {emergency}."]
    paragraphs.append(f"To talk to someone now: {describe(entry.crisis_lines[0])}")
    if entry.domestic_abuse:
        paragraphs.append(f"If you are not safe at home: {describe(entry.domestic_abuse[0])}")
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
