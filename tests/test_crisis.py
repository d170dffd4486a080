"""Crisis resources by country: the shipped data, the time-zone guess, overrides, checks."""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from course.crisis import (
    FALLBACK,
    CrisisDataError,
    Line,
    countries,
    country_for_timezone,
    how_to_reach,
    load_resources,
    read_zone_tables,
    resources_for,
    stale,
    text_lines,
    unverified,
    zone_tables,
)

REQUIRED = ["US", "CA", "GB", "IE", "DE", "AT", "CH", "FR", "NL", "ES", "IT", "AU", "NZ"]


def shipped_json() -> dict[str, Any]:
    raw = files("course.data").joinpath("crisis_resources.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def entry(country: str = "DE", **changes: Any) -> dict[str, Any]:
    """A valid entry, changed as asked."""
    item: dict[str, Any] = {
        "country": country,
        "name": "Germany",
        "emergency": "112",
        "crisis_lines": [
            {
                "name": "Practice line",
                "phone": "0800 000 000",
                "text": None,
                "url": "https://example.org/help",
                "hours": "24/7",
            }
        ],
        "domestic_abuse": [
            {
                "name": "Abuse line",
                "phone": "116 016",
                "text": None,
                "url": None,
                "hours": "24/7",
                "languages": ["de"],
            }
        ],
        "source": ["https://example.org"],
        "checked": "2026-12-01",
        "verified_online": True,
    }
    item.update(changes)
    return item


def write(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "practice-crisis.json"
    path.write_text(json.dumps({"countries": list(entries)}), encoding="utf-8")
    return path


# --- the shipped file ------------------------------------------------------------------


def test_shipped_file_covers_every_required_country() -> None:
    resources = load_resources()
    assert set(REQUIRED) <= set(resources)
    for code in REQUIRED:
        entry = resources[code]
        assert entry.country == code
        assert entry.name and entry.name != code
        assert re.search(r"\d", entry.emergency), code
        assert entry.crisis_lines, code
        assert entry.crisis_lines[0].phone or entry.crisis_lines[0].text, code
        assert entry.domestic_abuse, code
        assert entry.source, code


def test_the_fallback_is_there_and_points_to_a_directory() -> None:
    fallback = load_resources()[FALLBACK]
    assert fallback.is_fallback
    assert fallback.crisis_lines and fallback.domestic_abuse
    assert fallback.crisis_lines[0].url == "https://findahelpline.com"


def test_every_shipped_url_is_https() -> None:
    urls: list[str] = []

    def collect(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                collect(v, k)
        elif isinstance(node, list):
            for v in node:
                collect(v, key)
        elif key in ("url", "source") and node is not None:
            urls.append(node)

    collect(shipped_json())
    assert len(urls) > 30
    assert [
        url for url in urls if not re.fullmatch(r"https://[a-z0-9.-]+\.[a-z]+(/\S*)?", url)
    ] == []


def test_every_shipped_entry_says_whether_it_was_verified_online() -> None:
    for item in shipped_json()["countries"]:
        assert isinstance(item["verified_online"], bool), item["country"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", item["checked"]), item["country"]


def test_unverified_lists_the_entries_not_checked_online(tmp_path: Path) -> None:
    shipped = load_resources()
    offline = [code for code, e in shipped.items() if not e.verified_online]
    assert unverified(shipped) == sorted(offline)
    resources = load_resources(write(tmp_path, entry("DE", verified_online=True)))
    assert "DE" not in unverified(resources)
    assert unverified(resources) == sorted(set(offline) - {"DE"})


# --- time zones ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "country"),
    [
        ("Europe/Berlin", "DE"),
        ("Europe/Zurich", "CH"),  # zone1970.tab: CH,DE,LI
        ("Europe/Vienna", "AT"),
        ("America/Toronto", "CA"),  # zone1970.tab: CA,BS
        ("America/New_York", "US"),
        ("Europe/London", "GB"),
        ("Europe/Dublin", "IE"),
        ("Australia/Sydney", "AU"),
        ("Pacific/Auckland", "NZ"),  # zone1970.tab: NZ,AQ
        ("Asia/Tokyo", "JP"),
        ("UTC", None),
        ("Etc/UTC", None),
        ("Etc/GMT-2", None),
        ("Mars/Olympus_Mons", None),
        ("", None),
    ],
)
def test_country_for_timezone(tz: str, country: str | None) -> None:
    if not zone_tables().zone_country:
        pytest.skip("no zone.tab on this machine")
    assert country_for_timezone(tz) == country


def test_a_country_without_an_entry_gets_the_fallback() -> None:
    if not zone_tables().zone_country:
        pytest.skip("no zone.tab on this machine")
    resources = load_resources()
    assert "JP" not in resources
    assert resources_for(country_for_timezone("Asia/Tokyo"), resources).country == FALLBACK
    assert resources_for(country_for_timezone("Europe/Zurich"), resources).country == "CH"
    assert resources_for(country_for_timezone("UTC"), resources).country == FALLBACK


def test_zone_tables_from_a_folder(tmp_path: Path) -> None:
    """Only zone1970.tab: the first (most populous) country; links are followed; Etc and
    missing names give None."""
    (tmp_path / "zone1970.tab").write_text(
        "# comment\nCH,DE,LI\t+4723+00832\tEurope/Zurich\tBüsingen\n"
        "DE,DK,NO,SE,SJ\t+5230+01322\tEurope/Berlin\tmost of Germany\n",
        encoding="utf-8",
    )
    (tmp_path / "tzdata.zi").write_text(
        "L Europe/Zurich Europe/Busingen_Old\nL Europe/Busingen_Old Very/Old\n"
        "L Etc/UTC UTC\nL Nowhere/A Nowhere/B\nL Nowhere/B Nowhere/A\n",
        encoding="utf-8",
    )
    tables = read_zone_tables([tmp_path / "missing", tmp_path])
    assert country_for_timezone("Europe/Zurich", tables=tables) == "CH"
    assert country_for_timezone("Europe/Berlin", tables=tables) == "DE"
    assert country_for_timezone("Very/Old", tables=tables) == "CH"
    assert country_for_timezone("UTC", tables=tables) is None
    assert country_for_timezone("Nowhere/A", tables=tables) is None  # a loop ends
    assert country_for_timezone("Europe/Zurich", tables=read_zone_tables([])) is None


def test_zone_tab_wins_over_zone1970_tab(tmp_path: Path) -> None:
    (tmp_path / "zone.tab").write_text("DE\t+4742+00841\tEurope/Busingen\n", encoding="utf-8")
    (tmp_path / "zone1970.tab").write_text(
        "CH,DE,LI\t+4723+00832\tEurope/Zurich\n", encoding="utf-8"
    )
    (tmp_path / "tzdata.zi").write_text("L Europe/Zurich Europe/Busingen\n", encoding="utf-8")
    tables = read_zone_tables([tmp_path])
    assert country_for_timezone("Europe/Busingen", tables=tables) == "DE"


# --- choosing, overriding, limiting -----------------------------------------------------


def test_resources_for_known_unknown_and_missing_countries() -> None:
    resources = load_resources()
    assert resources_for("DE", resources).country == "DE"
    assert resources_for("de", resources).country == "DE"
    assert resources_for(None, resources).country == FALLBACK
    assert resources_for("JP", resources).country == FALLBACK


def test_shown_limits_the_countries() -> None:
    resources = load_resources()
    shown = frozenset({"DE", "AT", "CH"})
    assert resources_for("AT", resources, shown).country == "AT"
    assert resources_for("US", resources, shown).country == FALLBACK
    assert resources_for(None, resources, shown).country == FALLBACK
    assert resources_for("US", resources, frozenset()).country == FALLBACK


def test_an_override_replaces_a_country_entirely_and_adds_new_ones(tmp_path: Path) -> None:
    japan = entry("JP", name="Japan", emergency="110 or 119")
    germany = entry("DE", name="Deutschland", domestic_abuse=[])
    resources = load_resources(write(tmp_path, germany, japan))

    assert resources["DE"].name == "Deutschland"
    assert [line.name for line in resources["DE"].crisis_lines] == ["Practice line"]
    assert resources["DE"].domestic_abuse == ()  # replaced, not merged with the shipped lines
    assert resources["DE"].checked == date(2026, 12, 1)
    assert resources["DE"].verified_online is True
    assert resources["JP"].emergency == "110 or 119"
    assert resources_for("JP", resources).country == "JP"
    assert resources["US"] == load_resources()["US"]  # the rest stays
    assert load_resources()["DE"].name == "Germany"  # the shipped data is not changed


def test_an_override_can_replace_the_fallback(tmp_path: Path) -> None:
    fallback = entry(FALLBACK, name="Elsewhere", emergency="your local emergency number")
    resources = load_resources(write(tmp_path, fallback))
    assert resources_for("JP", resources).name == "Elsewhere"


def test_countries_sorted_by_name_for_a_picker() -> None:
    picked = countries(load_resources())
    names = [name for _, name in picked]
    assert names == sorted(names, key=str.casefold)
    assert ("DE", "Germany") in picked
    assert FALLBACK not in [code for code, _ in picked]
    assert countries(load_resources(), include_fallback=True)[-1][0] == FALLBACK


def test_stale_entries_with_a_fake_today(tmp_path: Path) -> None:
    old = entry("JP", name="Japan", checked="2025-01-10")
    resources = load_resources(write(tmp_path, old))
    shipped_checked = max(e.checked for code, e in resources.items() if code != "JP")
    assert stale(resources, today=date(2026, 1, 10)) == []  # exactly 365 days
    assert stale(resources, today=date(2026, 1, 11)) == ["JP"]
    assert stale(resources, today=date(2026, 1, 11), max_age_days=1000) == []
    everything = stale(resources, today=date.fromordinal(shipped_checked.toordinal() + 366))
    assert everything == sorted(resources)


# --- validation ------------------------------------------------------------------------------


def _line(**changes: Any) -> dict[str, Any]:
    line: dict[str, Any] = copy.deepcopy(entry()["crisis_lines"][0])
    line.update(changes)
    return line


def _without(key: str) -> dict[str, Any]:
    item = entry()
    del item[key]
    return item


def _line_without(key: str) -> dict[str, Any]:
    line = _line()
    del line[key]
    return entry(crisis_lines=[line])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (_without("emergency"), "entry 1 (DE): 'emergency' is missing"),
        (_without("verified_online"), "entry 1 (DE): 'verified_online' is missing"),
        (_line_without("hours"), "crisis_lines[0] (Practice line): 'hours' is missing"),
        (_line_without("url"), "(Practice line): 'url' is missing (use null if there is none)"),
        (entry("Germany"), "'country' must be an ISO 3166-1 alpha-2 code"),
        (entry("de"), "got 'de'"),
        (entry(crisis_lines=[_line(url="http://example.org")]), "must be an https:// URL"),
        (entry(source=["example.org"]), "'source[0]' must be an https:// URL"),
        (entry(domestic_abuse=[_line(url="https://")]), "domestic_abuse[0] (Practice line)"),
        (entry(checked="26.11.2026"), "'checked' must be a date as YYYY-MM-DD; got '26.11.2026'"),
        (entry(checked="2026-02-30"), "got '2026-02-30'"),
        (entry(checked="20261126"), "got '20261126'"),
        (entry(checked=20261126), "'checked' must be a date as YYYY-MM-DD; got 20261126"),
        (entry(verified_online="yes"), "'verified_online' must be true or false; got 'yes'"),
        (entry(verified_online=1), "'verified_online' must be true or false; got 1"),
        (entry(crisis_lines=[]), "entry 1 (DE): 'crisis_lines' must not be empty; got []"),
        (entry(source=[]), "entry 1 (DE): 'source' must not be empty; got []"),
        (entry(crisis_lines=[42]), "entry 1 (DE), crisis_lines[0]: expected an object"),
        (
            entry(crisis_lines=[_line(phone=None, text=None, url=None)]),
            "needs at least one of 'phone', 'text' or 'url'",
        ),
        (entry(phnoe="1"), "entry 1 (DE): 'phnoe' is not a known field"),
        (entry(name=""), "'name' must be a non-empty string"),
        (entry(name=None), "'name' must be a non-empty string; got null"),
        (entry(crisis_lines=[_line(phone=42)]), "'phone' must be a non-empty string, or null"),
        (entry(crisis_lines=[_line(languages="de")]), "'languages' must be a list"),
        (entry(crisis_lines=[_line(languages=["de", " "])]), "'languages[1]' must be a language"),
    ],
)
def test_a_broken_override_is_reported_clearly(
    tmp_path: Path, item: dict[str, Any], message: str
) -> None:
    path = write(tmp_path, item)
    with pytest.raises(CrisisDataError) as caught:
        load_resources(path)
    assert str(caught.value).startswith(f"{path}: entry 1")
    assert message in str(caught.value)


def test_uk_is_not_a_country_code(tmp_path: Path) -> None:
    if not zone_tables().countries:
        pytest.skip("no iso3166.tab on this machine")
    with pytest.raises(CrisisDataError, match=r"'country' is not an ISO 3166-1 .* 'GB'.*got 'UK'"):
        load_resources(write(tmp_path, entry("UK")))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"countries": [', "not valid JSON"),
        ("[]", 'expected an object {"countries": [...]}'),
        ('{"entries": []}', "'entries' is not a known field"),
        ('{"countries": {}}', "'countries' must be a list of country entries; got {}"),
        ('{"countries": [], "countries": []}', "the key 'countries' appears twice"),
        ('{"countries": [42]}', "entry 1: expected an object"),
    ],
)
def test_a_broken_override_file_is_reported_clearly(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CrisisDataError) as caught:
        load_resources(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_every_problem_is_reported_once_on_a_line_of_its_own(tmp_path: Path) -> None:
    broken_line = _line(url="http://example.org", hours="")
    path = write(tmp_path, entry(), entry("de", crisis_lines=[broken_line], verified_online=None))
    with pytest.raises(CrisisDataError) as caught:
        load_resources(path)
    where = f"{path}: entry 2 (de)"
    assert str(caught.value).splitlines() == [
        f"{where}: 'country' must be an ISO 3166-1 alpha-2 code in capitals (e.g. 'DE'), "
        "or 'XX' for the worldwide fallback; got 'de'",
        f"{where}, crisis_lines[0] (Practice line): 'url' must be an https:// URL, or null for "
        "none; got 'http://example.org'",
        f"{where}, crisis_lines[0] (Practice line): 'hours' must be a non-empty string; got ''",
        f"{where}: 'verified_online' must be true or false; got null",
    ]  # and nothing about 'crisis_lines' as a whole, although its only line is broken


def test_values_are_kept_as_written_apart_from_surrounding_spaces(tmp_path: Path) -> None:
    line = _line(name=" Practice line ", url="https://Example.org")
    resources = load_resources(write(tmp_path, entry(crisis_lines=[line], source="https://a.b")))
    assert resources["DE"].crisis_lines[0].name == "Practice line"
    assert resources["DE"].crisis_lines[0].url == "https://Example.org"  # no "/" added
    assert resources["DE"].source == ("https://a.b",)  # one URL without the list around it


def test_a_country_twice_and_a_missing_file_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CrisisDataError, match="entry 2 \\(DE\\): country DE appears more"):
        load_resources(write(tmp_path, entry(), entry()))
    with pytest.raises(CrisisDataError, match="nope.json: cannot read"):
        load_resources(tmp_path / "nope.json")


# --- plain text --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [*REQUIRED, FALLBACK])
def test_text_lines_are_short_and_complete(code: str) -> None:
    country = load_resources()[code]
    lines = text_lines(country)
    assert 2 <= len(lines) <= 9
    for one in lines:
        assert len(one) <= 72 or " " not in one.strip(), one
    text = "\n".join(lines)
    assert country.emergency in text
    for line in (country.crisis_lines[0], country.domestic_abuse[0]):
        assert line.name.split()[0] in text
        for part in (line.phone or "").split(" or "):
            # a phone number is never split over two lines
            assert any(part in one for one in lines), part
        if line.url:
            assert any(line.url in one for one in lines)
    assert not re.search(r"\b([A-Za-z]+)\s+\1\b", text, flags=re.IGNORECASE), text


def test_how_to_reach_never_doubles_words() -> None:
    def line(phone: str | None, text: str | None) -> Line:
        url = None if phone or text else "https://example.org"  # a line needs one of the three
        return Line(name="X", phone=phone, text=text, url=url, hours="24/7")

    assert how_to_reach(line("988", "988")) == "call or text 988"
    assert how_to_reach(line("call 116 123", None)) == "call 116 123"
    assert how_to_reach(line("988", "text 988")) == "call or text 988"
    assert how_to_reach(line(None, "Text HOME to 741741")) == "Text HOME to 741741"
    assert how_to_reach(line(None, "HOME to 741741")) == "text HOME to 741741"
    assert how_to_reach(line("016", "WhatsApp 600 000 016")) == "call 016 or WhatsApp 600 000 016"
    assert how_to_reach(line(None, None)) == ""


def test_text_lines_for_the_us() -> None:
    lines = text_lines(load_resources()["US"])
    assert lines[0] == "In an emergency, call 911."
    joined = " ".join(line.strip() for line in lines)
    assert "988 Suicide & Crisis Lifeline, call or text 988 (24/7), https://988lifeline.org" in (
        joined
    )
    assert "call 1-800-799-7233 or text START to 88788" in joined
