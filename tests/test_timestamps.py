"""Syslog timestamps: year inference at year boundaries and Feb 29, zones, ISO forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.timestamps import SyslogClock, zone


def at(text: str, reference: datetime, tz=UTC) -> str:
    parsed = SyslogClock().parse(text, reference, tz)
    assert parsed is not None
    return parsed[1]


def test_same_year_when_in_the_past() -> None:
    assert at("May 17 15:26:00", datetime(2020, 12, 31, tzinfo=UTC)) == "2020-05-17T15:26:00.000000Z"


def test_december_line_read_in_january_is_last_year() -> None:
    assert at("Dec 31 23:59:59", datetime(2021, 1, 1, 0, 0, 30, tzinfo=UTC)) == "2020-12-31T23:59:59.000000Z"


def test_january_line_read_on_new_years_eve_with_skew_is_next_year() -> None:
    # the host's clock runs 2 minutes ahead: its Jan 1 00:01 line is read at Dec 31 23:59
    assert at("Jan  1 00:01:00", datetime(2020, 12, 31, 23, 59, tzinfo=UTC)) == "2021-01-01T00:01:00.000000Z"


def test_never_in_the_future_beyond_tolerance() -> None:
    reference = datetime(2021, 6, 1, 12, 0, tzinfo=UTC)
    assert at("Jun  1 13:00:00", reference) == "2020-06-01T13:00:00.000000Z"
    assert at("Jun  1 12:10:00", reference) == "2021-06-01T12:10:00.000000Z"  # within 15 min of skew
    clock = SyslogClock(tolerance=timedelta(0))
    assert clock.parse("Jun  1 12:00:01", reference, UTC)[1] == "2020-06-01T12:00:01.000000Z"


@pytest.mark.parametrize(("reference", "year"), [
    (datetime(2024, 3, 1, tzinfo=UTC), 2024),
    (datetime(2025, 3, 1, tzinfo=UTC), 2024),   # no Feb 29 in 2025: the last leap year
    (datetime(2024, 2, 28, tzinfo=UTC), 2020),  # Feb 29 2024 is still in the future
    (datetime(2101, 1, 1, tzinfo=UTC), 2096),   # 2100 is not a leap year
])
def test_feb_29(reference: datetime, year: int) -> None:
    assert at("Feb 29 10:00:00", reference) == f"{year}-02-29T10:00:00.000000Z"


def test_zone_applies_to_classic_and_naive_iso() -> None:
    ljubljana = zone("Europe/Ljubljana")
    assert at("Aug 21 15:01:32", datetime(2020, 12, 1, tzinfo=UTC), ljubljana) == "2020-08-21T13:01:32.000000Z"
    assert at("2019-06-14T10:40:20.912134", datetime(2020, 1, 1, tzinfo=UTC), ljubljana) == "2019-06-14T08:40:20.912134Z"
    assert at("Jan 15 12:00:00", datetime(2021, 2, 1, tzinfo=UTC), zone("+05:30")) == "2021-01-15T06:30:00.000000Z"


def test_iso_forms_carry_their_zone() -> None:
    ref = datetime(2030, 1, 1, tzinfo=UTC)
    assert at("2024-05-17T16:02:03.412271+00:00", ref) == "2024-05-17T16:02:03.412271Z"
    assert at("2019-06-14T13:01:15.412+01:30", ref) == "2019-06-14T11:31:15.412000Z"
    assert at("2024-05-17T16:10:00.000000+02:00", ref) == "2024-05-17T14:10:00.000000Z"
    assert at("2024-05-17T16:10:00Z", ref) == "2024-05-17T16:10:00.000000Z"


def test_garbage_is_none_and_unknown_zone_raises() -> None:
    clock = SyslogClock()
    ref = datetime(2020, 1, 1, tzinfo=UTC)
    assert clock.parse("Foo 17 15:26:00", ref, UTC) is None
    assert clock.parse("May 32 15:26:00", ref, UTC) is None
    assert clock.parse("2024-13-01T00:00:00", ref, UTC) is None
    with pytest.raises(ValueError):
        zone("Mars/Olympus")


def test_cached_answers_equal_fresh_ones_across_years_and_zones() -> None:
    """One clock used for many lines (answers cached with the range of read times they hold for)
    gives exactly what a new clock computes for each line alone."""
    texts = ["Dec 31 23:59:59", "Jan  1 00:00:00", "Jan  1 00:10:00", "Feb 29 12:00:00", "May 17 15:26:00",
             "Dec 31 23:50:00.250"]
    zones = [zone("UTC"), zone("Europe/Ljubljana"), zone("+05:30"), zone("-08:00")]
    shared = SyslogClock()
    checked = 0
    for start in (datetime(2023, 12, 31, 22, tzinfo=UTC), datetime(2024, 2, 28, 22, tzinfo=UTC),
                  datetime(2024, 12, 31, 22, tzinfo=UTC), datetime(2028, 2, 29, 11, tzinfo=UTC)):
        reference = start
        for step in range(300):  # forward through each boundary in uneven steps, both sides of it
            reference += timedelta(minutes=1 + step % 7, seconds=step % 13)
            for text in texts:
                for tz in zones:
                    assert shared.parse(text, reference, tz) == SyslogClock().parse(text, reference, tz), \
                        (text, reference, tz)
                    checked += 1
        for step in range(50):  # and back in time (a reordered or replayed line)
            reference -= timedelta(hours=step)
            for text in texts:
                assert shared.parse(text, reference, UTC) == SyslogClock().parse(text, reference, UTC)
    assert checked == 4 * 300 * len(texts) * len(zones)


# --- the other writers' forms ----------------------------------------------------------------------
def test_journalctl_and_busybox_classic_forms_infer_the_year_too() -> None:
    january = datetime(2025, 1, 2, tzinfo=UTC)
    assert at("Dec 02 10:00:00", january) == "2024-12-02T10:00:00.000000Z"           # journalctl -o short
    assert at("Dec 02 10:00:00.123456", january) == "2024-12-02T10:00:00.123456Z"    # short-precise
    assert at("Dec  2 10:00:00.123", january) == "2024-12-02T10:00:00.123000Z"       # busybox precise
    assert at("Jan  1 23:59:00.5", january) == "2025-01-01T23:59:00.500000Z"
    assert at("Dec 02 10:00:00", january, zone("America/New_York")) == "2024-12-02T15:00:00.000000Z"


def test_iso_variants_of_journalctl_syslog_ng_and_openvpn() -> None:
    ref = datetime(2030, 1, 1, tzinfo=UTC)
    assert at("2024-12-02T10:00:00+0100", ref) == "2024-12-02T09:00:00.000000Z"      # short-iso before systemd 249
    assert at("2024-12-02T10:00:00,123+01:00", ref) == "2024-12-02T09:00:00.123000Z"
    assert at("2022-04-29T10:51:22+0530", ref) == "2022-04-29T05:21:22.000000Z"      # Access Server
    # OpenVPN 2.5+'s own log: no zone (the host's), " us=N" microseconds not zero-padded
    assert at("2024-12-15 14:11:26", ref, zone("Europe/Ljubljana")) == "2024-12-15T13:11:26.000000Z"
    assert at("2024-12-15 14:11:26 us=5301", ref) == "2024-12-15T14:11:26.005301Z"
    assert at("2024-12-15 14:11:26 us=732652", ref) == "2024-12-15T14:11:26.732652Z"


def test_ctime_of_openvpn_2_4_and_openwrt() -> None:
    ref = datetime(2030, 1, 1, tzinfo=UTC)
    assert at("Sun Dec 15 14:11:26 2024", ref) == "2024-12-15T14:11:26.000000Z"
    assert at("Sun Dec  1 09:01:02 2024", ref, zone("Europe/Ljubljana")) == "2024-12-01T08:01:02.000000Z"
    assert at("Sun Dec 15 14:11:26 2024 us=12", ref) == "2024-12-15T14:11:26.000012Z"
    assert at("Sat Aug  5 11:37:27 2023", ref, zone("+02:00")) == "2023-08-05T09:37:27.000000Z"


def test_short_full_reads_utc_and_numeric_zones_and_uses_the_host_zone_for_names() -> None:
    ref = datetime(2030, 1, 1, tzinfo=UTC)
    ljubljana = zone("Europe/Ljubljana")
    assert at("Mon 2024-12-02 10:00:00 UTC", ref, ljubljana) == "2024-12-02T10:00:00.000000Z"
    assert at("Mon 2024-12-02 10:00:00 +03", ref, ljubljana) == "2024-12-02T07:00:00.000000Z"
    assert at("Mon 2024-12-02 10:00:00 -0530", ref) == "2024-12-02T15:30:00.000000Z"
    assert at("Mon 2024-12-02 10:00:00 CET", ref, ljubljana) == "2024-12-02T09:00:00.000000Z"
    assert at("Mon 2024-07-01 10:00:00 CEST", ref, ljubljana) == "2024-07-01T08:00:00.000000Z"


def test_syslog_ng_full_and_epoch_seconds() -> None:
    ref = datetime(2030, 1, 1, tzinfo=UTC)
    assert at("2024 Dec  2 10:00:00", ref, zone("+01:00")) == "2024-12-02T09:00:00.000000Z"
    assert at("2024 Dec  2 10:00:00.250", ref) == "2024-12-02T10:00:00.250000Z"
    # epoch seconds carry no zone question at all
    assert at("1733133600.123456", ref, zone("Europe/Ljubljana")) == "2024-12-02T10:00:00.123456Z"
    assert at("1733133600", ref) == "2024-12-02T10:00:00.000000Z"


@pytest.mark.parametrize("text", [
    "[ 1234.567890]",                  # journalctl -o short-monotonic: time since boot
    "[ 1234.567890 <    0.000012>]",   # short-delta
    "Sun Dec 32 14:11:26 2024",
    "Dec 15 14:11:26 2024 extra",
    "Xyz 2024-12-02 10:00:00 UTC",
    "2024-12-15 14:11:26 us=1000000",  # not a microsecond count
    "12345.678",                       # 1970: not a log line's time
    "2024 Foo  2 10:00:00",
    "Dec  2 25:00:00",
])
def test_unreadable_forms_are_none(text: str) -> None:
    assert SyslogClock().parse(text, datetime(2024, 12, 31, tzinfo=UTC), UTC) is None
