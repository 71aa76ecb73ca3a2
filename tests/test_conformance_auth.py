"""Our auth parser against Filebeat's own system/auth module test logs and expected documents.

Compared: the fields the conformance README names, where Filebeat's document has them. Where we
differ on purpose (a better value), the difference is listed line by line in ``DELIBERATE``; a
test checks that each listed difference is still real, so the list cannot go stale.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.document import flatten
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext
from ingest.parsers.resources import ParserResources
from ingest.parsers.syslog_rules import AuthParser
from tests.conformance import agreement, compare, compared_fields, load_expected, read_lines, summary

DIR = Path(__file__).parent / "data" / "conformance" / "filebeat" / "system-auth"
LOGS = sorted(p.name for p in DIR.glob("*.log"))
FIELDS = ("source.ip", "source.port", "user.name", "user.id", "process.pid", "process.name", "event.outcome",
          "host.hostname", "group.name", "group.id", "system.auth.ssh.event", "system.auth.ssh.method",
          "system.auth.ssh.signature", "system.auth.ssh.dropped_ip", "system.auth.sudo.error",
          "system.auth.sudo.tty", "system.auth.sudo.pwd", "system.auth.sudo.user", "system.auth.sudo.command",
          "system.auth.useradd.home", "system.auth.useradd.shell", "event.action")
# timestamp.log carries the year: there @timestamp is comparable too
TIMESTAMPED = {"timestamp.log"}

#: (file, line number from 1, field) -> why we differ from Filebeat there.
DELIBERATE: dict[tuple[str, int, str], str] = {
    ("timestamp.log", 1, "@timestamp"): "we keep the line's microseconds (.912134); Filebeat 7.4 truncated to ms",
}


@pytest.fixture(scope="module")
def results() -> list[tuple[str, int, list[str], list[Any]]]:
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2021, 1, 1, tzinfo=UTC))
    out = []
    for log in LOGS:
        expected = load_expected(DIR / f"{log}-expected.json")
        lines = read_lines(DIR / log)
        for number, (line, exp) in enumerate(zip(lines, expected, strict=False), start=1):
            fields = compared_fields(exp, FIELDS + (("@timestamp",) if log in TIMESTAMPED else ()))
            out.append((log, number, fields, compare(flatten(parser.parse(line, ctx)), exp, fields)))
    return out


@pytest.mark.parametrize("log", LOGS)
def test_no_parse_failure_on_any_line(log: str) -> None:
    parser = AuthParser(ParserResources())
    ctx = LineContext(now=datetime(2021, 1, 1, tzinfo=UTC))
    failed = [n for n, line in enumerate(read_lines(DIR / log), 1)
              if PARSE_FAILURE_TAG in parser.parse(line, ctx).get("tags", [])]
    assert failed == []


def test_agreement_with_filebeat(results: list[tuple[str, int, list[str], list[Any]]]) -> None:
    tally, explained, unexplained = agreement(results, DELIBERATE)
    print()
    print(summary(tally, "system/auth vs Filebeat"))
    print("\n".join(unexplained))
    assert tally.compared > 900
    assert (tally.agreed + explained) / tally.compared >= 0.98, unexplained


def test_deliberate_differences_are_still_differences(results: list[tuple[str, int, list[str], list[Any]]]) -> None:
    found = {(log, number, m.field) for log, number, _, mismatches in results for m in mismatches}
    assert sorted(set(DELIBERATE) - found) == []
