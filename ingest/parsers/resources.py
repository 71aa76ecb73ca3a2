"""What rule-driven parsers share: the pattern library, compiled rules, the clock and time zones.

Built once per process (compiling every rule takes a moment) and handed to each parser.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta, tzinfo
from pathlib import Path
from typing import Any

from ingest.errors import PatternError
from ingest.grok import PatternLibrary, default_pattern_folders
from ingest.parsers.base import LineContext
from ingest.parsers.rules import RuleSet, load_rules
from ingest.timestamps import SyslogClock

_SHELL_FILE = re.compile(r"shell_(?P<user>[^/\\]+?)\.log(?:\.\d+)?$")


class ParserResources:
    def __init__(self, pattern_folders: list[Path] | None = None, *, timezone: tzinfo = UTC,
                 host_timezones: dict[str, tzinfo] | None = None,
                 future_tolerance: timedelta = timedelta(minutes=15)) -> None:
        self.folders = pattern_folders or default_pattern_folders()
        self.library = PatternLibrary(self.folders)
        self.clock = SyslogClock(future_tolerance)
        self.timezone = timezone
        self.host_timezones = host_timezones or {}
        self._rules: dict[tuple[str, tuple[tuple[str, ...], ...] | None], RuleSet] = {}

    def rules(self, kind: str, base: tuple[tuple[str, ...], ...] | None = None) -> RuleSet:
        """The compiled rules of ``kind``; ``base``: see :func:`~ingest.parsers.rules.load_rules`."""
        found = self._rules.get((kind, base))
        if found is None:
            for folder in reversed(self.folders):
                path = folder / f"{kind}.rules.toml"
                if path.is_file():
                    found = load_rules(path, self.library, base)
                    break
            else:
                raise PatternError(f"no {kind}.rules.toml in the pattern folders",
                                   path=", ".join(str(f) for f in self.folders))
            self._rules[(kind, base)] = found
        return found

    def zone_for(self, doc: dict[str, Any], ctx: LineContext) -> tzinfo:
        """The zone of timestamps without one: per host if configured, else the default."""
        if self.host_timezones:
            host = doc.get("host", {}).get("hostname") or ctx.host
            if host in self.host_timezones:
                return self.host_timezones[host]
        return ctx.tz if ctx.tz is not UTC else self.timezone

    @staticmethod
    def shell_user(path: str | None) -> str | None:
        if not path:
            return None
        m = _SHELL_FILE.search(path)
        return m.group("user") if m else None
