"""Our auditd documents against the ones Filebeat's auditd module produced for its own test logs.

Run with ``-s`` to see the agreement figures. Differences we make on purpose are listed line by
line in ``DELIBERATE``; a test checks that each is still a difference, so the list cannot go stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.parsers.auditd import AuditdParser
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext
from tests.conformance import agreement, compare, compared_fields, flatten, load_expected, read_lines, summary

DIR = Path(__file__).parent / "data" / "conformance" / "filebeat" / "auditd"
LOGS = sorted(p.name for p in DIR.glob("*.log"))

#: Compared wherever Filebeat's document has them; every ``auditd.log.*`` field it has is compared too.
FIELDS = (
    "@timestamp",
    "event.action",
    "event.outcome",
    "event.category",
    "event.type",
    "user.id",
    "user.audit.id",
    "user.name",
    "user.terminal",
    "user.group.id",
    "user.effective.id",
    "user.effective.group.id",
    "user.saved.id",
    "user.saved.group.id",
    "user.filesystem.id",
    "user.filesystem.group.id",
    "user.target.id",
    "group.id",
    "process.pid",
    "process.ppid",
    "process.name",
    "process.executable",
    "process.args",
    "process.args_count",
    "host.architecture",
    "source.ip",
    "source.address",
    "destination.address",
)

OUTCOME = "event.outcome is an ECS value: res=1 -> 'success' (Filebeat 7.4 copies '1')"
ACTION = (
    "event.action is the lowercased record type (Filebeat 7.4); the Filebeat that wrote this file "
    "uses auditbeat's verbs ('started-service')"
)
USER_ID = (
    "user.id is uid (Filebeat 7.4, auditbeat); the Filebeat that wrote this file puts auid into "
    "user.id and uid into user.effective.id"
)
EXECVE_EXE = "a0 of an EXECVE record is argv[0], not the executable (exe of the SYSCALL record is)"

_LINES: dict[tuple[str, str, str], tuple[int, ...]] = {
    ("audit-cent7-node.log", "event.action", ACTION): (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    ("audit-cent7-node.log", "event.outcome", OUTCOME): (2, 3),
    ("audit-rhel6.log", "event.outcome", OUTCOME): (6,),
    ("audit-rhel7_2.log", "event.action", ACTION): (1,),
    ("execve-hex-arg.log", "process.executable", EXECVE_EXE): (1,),
    ("test.log", "event.outcome", OUTCOME): (1,),
    ("useradd.log", "event.action", ACTION): (1, 2, 3, 4, 5, 6, 7, 8),
    ("useradd.log", "user.id", USER_ID): (1, 2, 3, 4, 5, 6, 7, 8),
    ("useradd.log", "user.effective.id", USER_ID): (1, 2, 3, 4, 6),
}
#: (file, line number from 1, field) -> why we differ from Filebeat there.
DELIBERATE: dict[tuple[str, int, str], str] = {
    (log, line, field): reason for (log, field, reason), lines in _LINES.items() for line in lines
}


def _expected_path(log: str) -> Path:
    plain = DIR / f"{log}-expected.json"
    return plain if plain.exists() else DIR / f"{log.removesuffix('.log')}-expected.json"


def _fields(expected: dict[str, Any]) -> list[str]:
    extra = sorted(k for k in expected if k.startswith("auditd.log."))
    return compared_fields(expected, (*FIELDS, *extra))


def _results() -> list[tuple[str, int, list[str], list[Any]]]:
    """(file, line number, compared fields, mismatches) for every line with an expected document."""
    parser, ctx = AuditdParser(), LineContext()
    out = []
    for log in LOGS:
        expected = load_expected(_expected_path(log))
        lines = read_lines(DIR / log)
        for number, (line, exp) in enumerate(zip(lines, expected, strict=False), start=1):
            fields = _fields(exp)
            out.append((log, number, fields, compare(flatten(parser.parse(line, ctx)), exp, fields)))
    return out


def test_every_log_has_expected_documents() -> None:
    assert len(LOGS) == 7, LOGS
    for log in LOGS:
        expected = load_expected(_expected_path(log))
        lines = read_lines(DIR / log)
        assert expected and len(expected) <= len(lines), log
        assert len(expected) == min(len(lines), 100), log  # long logs: the first 100 lines


@pytest.mark.parametrize("log", LOGS)
def test_no_parse_failure_on_any_line(log: str) -> None:
    parser, ctx = AuditdParser(), LineContext()
    lines = read_lines(DIR / log)
    failed = [
        n for n, line in enumerate(lines, 1) if PARSE_FAILURE_TAG in parser.parse(line, ctx).get("tags", [])
    ]
    assert failed == []
    assert all("record_type" in parser.parse(line, ctx)["auditd"]["log"] for line in lines)


def test_agreement_with_filebeat() -> None:
    tally, explained, unexplained = agreement(_results(), DELIBERATE)
    with_deliberate = (tally.agreed + explained) / tally.compared
    print()
    print(summary(tally, "auditd vs Filebeat"))
    print(
        f"agreement: {tally.agreement:.2%} of {tally.compared} values; "
        f"{with_deliberate:.2%} counting the {explained} listed deliberate differences"
    )
    print("\n".join(unexplained))
    assert tally.compared > 1500
    assert with_deliberate >= 0.98, unexplained
    # the fields the conformance README names must agree everywhere but where we differ on purpose
    core = {"auditd.log.record_type", "auditd.log.sequence", "process.pid", "process.name", "@timestamp"}
    assert [u for u in unexplained if u.split(": ")[1] in core] == []


def test_deliberate_differences_are_still_differences() -> None:
    found = {(log, number, m.field) for log, number, _, mismatches in _results() for m in mismatches}
    stale = sorted(set(DELIBERATE) - found)
    assert stale == [], "listed as deliberate differences but we now agree (or the field is gone)"
