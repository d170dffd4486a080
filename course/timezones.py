"""Which time zones a person can choose, and how the picker groups and names them.

The tz database holds about 600 names, many of them not places: ``Factory``, ``localtime``,
``posixrules``, ``Etc/GMT+5`` (whose sign is the reverse of what it looks like), ``EST5EDT``
and old aliases such as ``US/Eastern`` or ``GB``. A reader or a staff member picks a
*place*: ``Region/City`` in one of the regions below, or ``UTC``. Signup still accepts any
name the machine knows, because it comes from the browser (``Intl``), which may give an
alias; such a zone keeps working and can be kept unchanged when the reader saves their
schedule, but the picker offers only places.
"""

from __future__ import annotations

import zoneinfo
from functools import cache

#: The tz database's geographic regions (its "continent/ocean" first parts).
REGIONS = (
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
)


@cache
def known_timezones() -> frozenset[str]:
    """Every IANA time zone name this machine knows (what signup accepts)."""
    return frozenset(zoneinfo.available_timezones())


@cache
def place_timezones() -> frozenset[str]:
    """The zones a person can pick: ``Region/City`` in :data:`REGIONS`, and ``UTC``."""
    return frozenset(
        zone
        for zone in known_timezones()
        if zone == "UTC" or (zone.split("/", 1)[0] in REGIONS and "/" in zone)
    )


def zone_label(zone: str) -> str:
    """A zone's name for people: ``America/Argentina/Buenos_Aires`` -> ``Argentina –
    Buenos Aires`` (the region is the group's label)."""
    if "/" not in zone:
        return zone
    return zone.split("/", 1)[1].replace("_", " ").replace("/", " – ")


@cache
def zone_groups() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """The picker's groups: each region with its zones as (name, label), by label."""
    groups = []
    for region in REGIONS:
        zones = [z for z in place_timezones() if z.startswith(region + "/")]
        if zones:
            groups.append(
                (region, tuple(sorted(((z, zone_label(z)) for z in zones), key=lambda p: p[1])))
            )
    groups.append(("Other", (("UTC", "UTC (Coordinated Universal Time)"),)))
    return tuple(groups)


def may_choose(zone: str, current: str | None = None) -> bool:
    """Whether a picker may save ``zone``: a place, or the zone already saved (an alias
    from signup stays as it is when the person changes something else)."""
    return zone in place_timezones() or (current is not None and zone == current)
