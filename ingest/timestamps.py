"""Syslog timestamps to UTC: year inference for classic lines, zones, and caching.

Classic syslog (``May 17 15:26:00``) has no year and no zone. The year is chosen so that the event
is not in the future relative to the time the line was read (Filebeat's ``@timestamp``, or now),
with a small tolerance for clock skew between hosts: of the candidate years next, this and
previous (and further back for ``Feb 29``, which only exists in leap years), the latest one that
is not later than ``reference + tolerance`` wins. A December line read in January therefore goes
to last year (Logstash #4637, Beats #15442), and a ``Jan 1`` line read on ``Dec 31`` just before
midnight (a host whose clock runs ahead) goes to next year.

The zone for timestamps without one comes from configuration (per host, default UTC).
RFC 3339 / ISO 8601 timestamps (``2024-05-17T16:02:03.412271+00:00``) carry their own.

The forms :meth:`SyslogClock.parse` reads, told apart by their first characters:

- classic ``Dec  2 10:00:00`` / ``Dec 02 10:00:00.123456`` (rsyslog traditional, syslog-ng ``bsd``,
  busybox, journald forwarding, ``journalctl -o short[-precise]``): year inferred as above;
- ISO 8601 ``2024-12-02T10:00:00.123456+01:00``, ``+0100``, ``Z`` or no zone, ``T`` or a space
  (rsyslog high precision, RFC 5424, syslog-ng ``iso``, ``journalctl -o short-iso[-precise]``,
  OpenVPN 2.5+'s own log ``2024-12-15 14:11:26``);
- ``ctime`` ``Sun Dec 15 14:11:26 2024`` (OpenVPN 2.4's own log, OpenWrt ``logread``);
- ``journalctl -o short-full`` ``Mon 2024-12-02 10:00:00 CET``: ``UTC``/``GMT`` and numeric zones
  (``+03``, ``-0530``) are read, other abbreviations are ambiguous (``IST``, ``CST``...) and the
  configured zone of the host is used;
- syslog-ng ``full`` ``2024 Dec  2 10:00:00``;
- seconds since the epoch ``1733130000.123456`` (``journalctl -o short-unix``, syslog-ng ``unix``,
  OpenVPN ``--machine-readable-output``).

OpenVPN at ``--verb 4`` and above appends `` us=N`` (microseconds, not zero-padded) to its time.
Anything else (``journalctl -o short-monotonic``'s ``[ 1234.567890]``, ``Dec 32 ...``) is ``None``.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from ingest.document import format_timestamp

_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
#: entries per cache (texts of recent seconds: lines arrive roughly in time order); a full cache starts over
CACHE_LIMIT = 20_000  #: entries of each cache of SyslogClock (ingest.caches)
_CACHE_LIMIT = CACHE_LIMIT
_DAY = timedelta(days=1)


def zone(name: str) -> tzinfo:
    """``UTC``, ``Europe/Ljubljana``, ``+02:00``... as a tzinfo (raises ValueError if unknown)."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if name[:1] in "+-" and ":" in name:
        sign = 1 if name[0] == "+" else -1
        hours, minutes = name[1:].split(":")
        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    try:
        return ZoneInfo(name)
    except Exception as e:  # ZoneInfoNotFoundError, ValueError for odd keys
        raise ValueError(f"unknown time zone {name!r}") from e


class SyslogClock:
    """Turns header timestamps into ``(aware datetime, "@timestamp" string)``; caches by text."""

    def __init__(self, tolerance: timedelta = timedelta(minutes=15)) -> None:
        self.tolerance = tolerance
        self._classic: dict[tuple[str, tzinfo, int], tuple[datetime, str] | None] = {}
        self._fields: dict[str, tuple[int, int, int, int, int, int] | None] = {}
        self._iso: dict[tuple[str, tzinfo], tuple[datetime, str] | None] = {}
        #: (text, tz) -> (first reference, end reference, answer): see parse_classic
        self._resolved: dict[tuple[str, tzinfo], tuple[datetime, datetime, tuple[datetime, str]]] = {}

    def parse(self, text: str, reference: datetime, tz: tzinfo) -> tuple[datetime, str] | None:
        """Any of the forms above; ``None`` if ``text`` is not a timestamp we understand."""
        if text[:1].isdigit():
            fifth = text[4:5]
            if fifth == "-":
                return self.parse_iso(text, tz)
            if fifth == " ":
                return self._other(text, tz, _full)
            return self._other(text, tz, _unix)
        known = self._resolved.get((text, tz))  # classic lines of a recent second: the common case
        if known is not None and known[0] <= reference < known[1]:
            return known[2]
        if text[4:5].isalpha():
            return self._other(text, tz, _ctime)
        if text[8:9] == "-":
            return self._other(text, tz, _short_full)
        return self.parse_classic(text, reference, tz)

    def parse_iso(self, text: str, tz: tzinfo) -> tuple[datetime, str] | None:
        key = (text, tz)
        hit = self._iso.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        iso, _, usec = text.partition(" us=")
        try:
            ts = datetime.fromisoformat(iso)
            if usec:
                ts = ts.replace(microsecond=_openvpn_usec(usec))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=tz)
            result: tuple[datetime, str] | None = (ts, format_timestamp(ts))  # ValueError if out of range
        except ValueError:
            result = None
        if len(self._iso) > _CACHE_LIMIT:
            self._iso.clear()
        self._iso[key] = result
        return result

    def _other(self, text: str, tz: tzinfo,
               read: Callable[[str, tzinfo], datetime | None]) -> tuple[datetime, str] | None:
        """The forms that carry a year (ctime, short-full, syslog-ng full, epoch), cached by text."""
        key = (text, tz)
        hit = self._iso.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        try:
            ts = read(text, tz)
            result = (ts, format_timestamp(ts)) if ts is not None else None  # ValueError if out of range
        except (ValueError, OverflowError, OSError):
            result = None
        if len(self._iso) > _CACHE_LIMIT:
            self._iso.clear()
        self._iso[key] = result
        return result

    def _split_classic(self, text: str) -> tuple[int, int, int, int, int, int] | None:
        hit = self._fields.get(text, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        result = None
        parts = text.split()
        if len(parts) == 3 and parts[0][:3].title() in _MONTHS:
            try:
                month = _MONTHS[parts[0][:3].title()]
                day = int(parts[1])
                clock, _, frac = parts[2].partition(".")
                hh, mm, ss = (int(x) for x in clock.split(":"))
                micro = int((frac + "000000")[:6]) if frac else 0
                if 1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61:
                    result = (month, day, hh, mm, min(ss, 59), micro)
            except ValueError:
                result = None
        if len(self._fields) > _CACHE_LIMIT:
            self._fields.clear()
        self._fields[text] = result
        return result

    def _at_year(self, text: str, fields: tuple[int, int, int, int, int, int], year: int,
                 tz: tzinfo) -> tuple[datetime, str] | None:
        key = (text, tz, year)
        hit = self._classic.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        month, day, hh, mm, ss, micro = fields
        try:
            ts = datetime(year, month, day, hh, mm, ss, micro, tzinfo=tz)
            result: tuple[datetime, str] | None = (ts, format_timestamp(ts))
        except ValueError:  # Feb 29 in a common year, Apr 31...
            result = None
        if len(self._classic) > _CACHE_LIMIT:
            self._classic.clear()
        self._classic[key] = result
        return result

    def parse_classic(self, text: str, reference: datetime, tz: tzinfo) -> tuple[datetime, str] | None:
        # The answer for (text, tz) is the same for every reference between two instants (see
        # _valid_range): lines of one second, read within minutes of each other, find it here.
        known = self._resolved.get((text, tz))
        if known is not None and known[0] <= reference < known[1]:
            return known[2]
        fields = self._split_classic(text)
        if fields is None:
            return None
        latest = reference + self.tolerance
        year = reference.astimezone(tz).year + 1
        for _ in range(10):  # Feb 29 may need to go back up to 8 years (1900/2100 are not leap)
            candidate = self._at_year(text, fields, year, tz)
            if candidate is not None and candidate[0] <= latest:
                # (a tolerance of a day or more could let the year cap above differ within a range)
                valid = self._valid_range(text, fields, year, tz, candidate[0]) if self.tolerance < _DAY else None
                if valid is not None:
                    if len(self._resolved) > _CACHE_LIMIT:
                        self._resolved.clear()
                    self._resolved[(text, tz)] = (*valid, candidate)
                return candidate
            year -= 1
        return None

    def _valid_range(self, text: str, fields: tuple[int, int, int, int, int, int], year: int, tz: tzinfo,
                     chosen: datetime) -> tuple[datetime, datetime] | None:
        """The references for which ``chosen`` (the candidate of ``year``) stays the answer: from the
        moment it stops being in the future (``chosen - tolerance``) until the next candidate does."""
        for later in range(year + 1, year + 10):
            candidate = self._at_year(text, fields, later, tz)
            if candidate is not None:
                return chosen - self.tolerance, candidate[0] - self.tolerance
        return None


_WEEKDAYS = frozenset(calendar.day_abbr)
_UTC_NAMES = frozenset({"UTC", "GMT", "Z", "UT"})


def _openvpn_usec(text: str) -> int:
    """OpenVPN's `` us=N``: microseconds as a plain integer (``us=5301`` is .005301 s)."""
    usec = int(text)
    if not 0 <= usec < 1_000_000:
        raise ValueError(f"microseconds out of range: {text!r}")
    return usec


def _clock(text: str) -> tuple[int, int, int, int]:
    """``HH:MM:SS[.frac]`` to hours, minutes, seconds, microseconds (a leap second becomes :59)."""
    clock, _, frac = text.partition(".")
    hh, mm, ss = (int(x) for x in clock.split(":"))
    if not (hh < 24 and mm < 60 and ss < 61):
        raise ValueError(f"not a time of day: {text!r}")
    return hh, mm, min(ss, 59), int((frac + "000000")[:6]) if frac else 0


def _ctime(text: str, tz: tzinfo) -> datetime | None:
    """``Sun Dec 15 14:11:26 2024`` (C ``ctime()``), optionally followed by OpenVPN's `` us=N``."""
    main, _, usec = text.partition(" us=")
    parts = main.split()
    if len(parts) != 5 or parts[0] not in _WEEKDAYS or parts[1] not in _MONTHS:
        return None
    hh, mm, ss, micro = _clock(parts[3])
    if usec:
        micro = _openvpn_usec(usec)
    return datetime(int(parts[4]), _MONTHS[parts[1]], int(parts[2]), hh, mm, ss, micro, tzinfo=tz)


def _short_full(text: str, tz: tzinfo) -> datetime | None:
    """``journalctl -o short-full``: ``Mon 2024-12-02 10:00:00 CET`` (weekday, date, time, zone)."""
    parts = text.split()
    if len(parts) != 4 or parts[0] not in _WEEKDAYS:
        return None
    day = datetime.fromisoformat(f"{parts[1]}T{parts[2]}")
    name = parts[3]
    if name.upper() in _UTC_NAMES:
        zone_: tzinfo = UTC
    elif name[:1] in "+-" and name[1:].replace(":", "").isdigit():  # glibc's %Z for zones without a name
        digits = name[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        zone_ = timezone((1 if name[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes))
    else:
        zone_ = tz  # CET, EST, IST...: ambiguous abbreviations, the host's configured zone decides
    return day.replace(tzinfo=zone_)


def _full(text: str, tz: tzinfo) -> datetime | None:
    """syslog-ng ``ts-format(full)``: ``2024 Dec  2 10:00:00[.frac]``."""
    parts = text.split()
    if len(parts) != 4 or parts[1] not in _MONTHS:
        return None
    hh, mm, ss, micro = _clock(parts[3])
    return datetime(int(parts[0]), _MONTHS[parts[1]], int(parts[2]), hh, mm, ss, micro, tzinfo=tz)


def _unix(text: str, tz: tzinfo) -> datetime | None:
    """Seconds since the epoch with an optional fraction; implausible values (before 2000) are None."""
    seconds, _, frac = text.strip().partition(".")
    if not seconds.isdigit() or (frac and not frac.isdigit()) or not 946_684_800 <= int(seconds) < 32_503_680_000:
        return None
    micro = int((frac + "000000")[:6]) if frac else 0
    return datetime.fromtimestamp(int(seconds), UTC).replace(microsecond=micro)
