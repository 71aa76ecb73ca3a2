"""The message catalogue (``tests/data/catalogue``): every line gives its action, outcome and fields,
and no text an outsider chooses can move another field (log injection)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ingest.document import get_path
from ingest.grok import read_pattern_file
from ingest.parsers.base import PARSE_FAILURE_TAG
from tests.parsers.catalogue import Entry, Parsers, crafted_line, load, payloads_for, problems

ENTRIES = load()
#: the kinds whose parser is a rule file (auditd and teleport have parsers of their own)
RULE_KINDS = ("auth", "commands", "openvpn", "shell")
#: fields the detections, GeoIP and sessions trust: compared for every crafted line, listed or not
TRUSTED = ("event.action", "event.outcome", "source.ip", "source.port", "source.domain", "user.name",
           "user.target.name", "host.hostname", "process.name", "process.pid", "system.auth.ssh.method",
           "system.auth.ssh.key.fingerprint", "openvpn.virtual_ip", "log.syslog.repeated", "@timestamp")


@pytest.fixture(scope="module")
def parsers() -> Parsers:
    return Parsers()


def test_catalogue_is_not_empty() -> None:
    assert len(ENTRIES) > 0
    assert all(e.line for e in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_catalogue_line(entry: Entry, parsers: Parsers) -> None:
    doc = parsers.parse(entry)
    assert problems(entry, doc) == [], entry.line


def _substituted(value: Any, text: str, payload: str) -> Any:
    if isinstance(value, str):
        return value.replace(text, payload)
    if isinstance(value, list):
        return [_substituted(v, text, payload) for v in value]
    return value


INJECTION_CASES = [(e, text, name) for e in ENTRIES for text in (*e.outsider, *e.outsider_all)
                   for name in payloads_for(e.kind, e.encoding) if name not in e.ambiguous]


@pytest.mark.parametrize(("entry", "text", "payload"), INJECTION_CASES,
                         ids=[f"{e.name}-{t[:12]}-{p}" for e, t, p in INJECTION_CASES])
def test_outsider_text_moves_no_field(entry: Entry, text: str, payload: str, parsers: Parsers) -> None:
    crafted = payloads_for(entry.kind, entry.encoding)[payload]
    original = parsers.parse(entry)
    line = crafted_line(entry.line, text, crafted, entry.encoding)
    doc = parsers.parse(entry, line)
    assert doc["message"] == line
    assert PARSE_FAILURE_TAG not in doc.get("tags", []) or PARSE_FAILURE_TAG in entry.tags
    for path in (*TRUSTED, *entry.fields):
        if path == "message":
            continue
        want = _substituted(get_path(original, path), text, crafted)
        assert get_path(doc, path) == want, f"{path} moved: crafted line {line!r}"


def test_there_are_injection_cases() -> None:
    """The injection test must not pass by having nothing to try (an empty parametrization is a skip)."""
    assert len(INJECTION_CASES) > 1000
    assert {e.kind for e in ENTRIES if e.outsider} >= {"auth"}


#: auth.grok building blocks that capture text an outsider chooses (user names as sent, client
#: versions, key IDs, paths, commands, directory names)
OUTSIDER_BLOCKS = frozenset({"OUTSIDER_TEXT", "SSH_ANY_USER", "SSH_LAST_USER", "SUDO_HEAD"})
_REFERENCE = re.compile(r"%\{(\w+)")


def _blocks(expression: str, definitions: dict[str, str], seen: set[str] | None = None) -> set[str]:
    """The pattern names ``expression`` uses, directly or through other patterns."""
    seen = set() if seen is None else seen
    for name in _REFERENCE.findall(expression):
        if name not in seen:
            seen.add(name)
            if name in definitions:
                _blocks(definitions[name], definitions, seen)
    return seen


def _rule_of(parsers: Parsers, entry: Entry) -> str | None:
    """The name of the rule that gives ``entry``'s line its document (first match, as the parser does)."""
    return parsers.parser(entry.kind).rule_for(entry.line)


def test_every_auth_rule_capturing_outsider_text_is_tried_with_crafted_values(parsers: Parsers) -> None:
    """Each auth rule that captures outsider text must match at least one catalogue line that lists
    outsider text, so the injection test above runs on it."""
    definitions = {d.name: d.regex for folder in parsers.resources.folders
                   for d in read_pattern_file(folder / "auth.grok") if (folder / "auth.grok").is_file()}
    rules = parsers.resources.rules("auth").rules
    wanted = {r.name for r in rules if _blocks(r.grok.expression, definitions) & OUTSIDER_BLOCKS}
    tried = {_rule_of(parsers, e) for e in ENTRIES if e.kind == "auth" and e.outsider}
    assert len(wanted) > 50
    assert sorted(wanted - tried) == []


def _first_match(parsers: Parsers, kind: str, line: str, *, use_prefix: bool) -> str | None:
    return parsers.parser(kind).rule_for(line, prefilter=use_prefix)


def test_literal_prefixes_never_skip_the_rule_that_matches(parsers: Parsers) -> None:
    """A rule skipped by its literal prefix (the pre-check before its regex) must be one whose regex
    would not have matched: every catalogue, golden and Filebeat test line gets the same rule both ways."""
    ruled = [e for e in ENTRIES if e.kind in RULE_KINDS]
    cases = [(e.kind, e.line) for e in ruled]
    cases += [(e.kind, crafted_line(e.line, t, p, e.encoding)) for e in ruled for t in e.outsider
              for p in payloads_for(e.kind, e.encoding).values()]
    data = Path(__file__).parent.parent / "data"
    for log in sorted((data / "golden").glob("*/*.log")):
        if log.parent.name in RULE_KINDS:
            cases += [(log.parent.name, line) for line in log.read_text(encoding="utf-8").splitlines()]
    for log in sorted((data / "conformance" / "filebeat" / "system-auth").glob("*.log")):
        cases += [("auth", line) for line in log.read_text(encoding="utf-8").splitlines()]
    differ = [(kind, line) for kind, line in cases
              if _first_match(parsers, kind, line, use_prefix=True) != _first_match(parsers, kind, line, use_prefix=False)]
    assert len(cases) > 5000
    assert differ == []
