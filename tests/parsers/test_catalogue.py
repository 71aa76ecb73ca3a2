"""The message catalogue (``tests/data/catalogue``): every line gives its action, outcome and fields,
and no text an outsider chooses can move another field (log injection)."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.document import get_path
from ingest.parsers.base import PARSE_FAILURE_TAG
from tests.parsers.catalogue import Entry, Parsers, crafted_line, load, payloads_for, problems

ENTRIES = load()
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
