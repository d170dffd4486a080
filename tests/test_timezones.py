"""The zones a person can pick (course.timezones)."""

from __future__ import annotations

from course.timezones import known_timezones, may_choose, place_timezones, zone_groups, zone_label


def test_only_places_and_utc_can_be_picked() -> None:
    places = place_timezones()
    for zone in ("Europe/Berlin", "America/Argentina/Buenos_Aires", "Pacific/Chatham", "UTC"):
        assert zone in places and may_choose(zone)
    for zone in ("Factory", "localtime", "posixrules", "Etc/GMT+5", "US/Eastern", "EST5EDT", "GB"):
        assert zone not in places and not may_choose(zone)
        if zone in known_timezones():
            assert may_choose(zone, current=zone)  # an alias already saved is kept


def test_every_place_appears_once_in_the_groups_with_a_readable_label() -> None:
    listed = [zone for _region, zones in zone_groups() for zone, _label in zones]
    assert sorted(listed) == sorted(place_timezones())
    assert zone_label("America/Argentina/Buenos_Aires") == "Argentina – Buenos Aires"
    assert zone_label("America/New_York") == "New York"
    groups = dict(zone_groups())
    europe = [label for _zone, label in groups["Europe"]]
    assert europe == sorted(europe) and "Berlin" in europe
