"""Header forms and unwrap forms in rule files, the literal prefilter of rules, and the time rules of
the rule-driven parsers (``_dateparsefailure`` when no time can be read, read time when there is none)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.errors import PatternError
from ingest.grok import PatternLibrary
from ingest.parsers.base import LineContext
from ingest.parsers.resources import ParserResources
from ingest.parsers.rules import header_forms, load_rules, required_literal
from ingest.parsers.syslog_rules import OpenVpnParser

NOW = datetime(2024, 12, 31, tzinfo=UTC)


@pytest.mark.parametrize(("expression", "literal"), [
    ("^%{VPN_PEER} MULTI: Learn: (?:%{IP:x}|%{NOTSPACE:y}) -> ", " MULTI: Learn: "),
    (r"^%{VPN_PEER} Peer Connection Initiated with \[AF_INET6?\]\S+$", " Peer Connection Initiated with [AF_INET"),
    (r"^%{PAM_SERVICE}: session opened for user %{USER:u}", ": session opened for user "),
    (r"^%{A}(?:x|y)%{B}", ""),                    # nothing at the top level
    (r"^foo|bar", ""),                            # a top-level alternation: nothing is certain
    (r"^%{A} ab?c", " a"),                        # the optional b is not required, so neither is "bc"
    (r"^%{A} ab{2}c", " a"),
    (r"^%{A} [xyz]+ done", " done"),
    (r"^%{A}\x41BC", "BC"),                       # \x41 is a code point, not the text "x41"
    (r"(?i)^%{A} Foo", ""),                       # case-insensitive: a literal check would be wrong
    (r"^%{A}: \[%{B}\] ", ": ["),
])
def test_required_literal(expression: str, literal: str) -> None:
    assert required_literal(expression) == literal


def _library(tmp_path: Path, text: str) -> PatternLibrary:
    (tmp_path / "t.grok").write_text(text, encoding="utf-8")
    return PatternLibrary([tmp_path])


def test_a_reference_to_an_alternation_of_anchored_forms_is_split(tmp_path: Path) -> None:
    lib = _library(tmp_path, "\n".join([
        "H (?:%{H_A}|%{H_B})",
        "H_A ^a ",
        "H_B ^b ",
        "NOT_ANCHORED (?:%{H_A}|%{LOOSE})",
        "LOOSE x ",
    ]))
    assert header_forms(["%{H}"], lib) == ["%{H_A}", "%{H_B}"]
    assert header_forms(["%{NOT_ANCHORED}"], lib) == ["%{NOT_ANCHORED}"]  # one form: search semantics differ
    assert header_forms(["%{H} extra"], lib) == ["%{H} extra"]


def _rules_dir(tmp_path: Path, rules: str) -> ParserResources:
    (tmp_path / "f.grok").write_text("\n".join([
        r"F_TS (?<[@metadata][timestamp]>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)",
        r"F_TIMED ^%{F_TS} \[%{WORD:[process][name]}\]\s",
        r"F_UNTIMED ^(?!\d{4}-)",
        r"F_WRAP ^<<(?<[@metadata][body]>.*)>>$",
    ]), encoding="utf-8")
    (tmp_path / "openvpn.rules.toml").write_text(rules, encoding="utf-8")
    return ParserResources([tmp_path])


RULES = """
header = ["%{F_TIMED}", "%{F_UNTIMED}"]
unwrap = ["%{F_WRAP}"]
[[rules]]
name = "hello"
match = '^hello %{WORD:[user][name]}$'
set = { "event.action" = "said_hello" }
"""


def test_forms_in_order_unwrap_and_time_rules(tmp_path: Path) -> None:
    parser = OpenVpnParser(_rules_dir(tmp_path, RULES))
    ctx = LineContext(now=NOW)
    timed = parser.parse("2024-12-15 14:11:26 [p] hello alice", ctx)
    assert (timed["event"]["action"], timed["user"]["name"], timed["process"]["name"]) == ("said_hello", "alice", "p")
    assert timed["@timestamp"] == "2024-12-15T14:11:26.000000Z" and "tags" not in timed
    untimed = parser.parse("hello bob", ctx)  # a form without a time: the read time, no tag
    assert untimed["user"]["name"] == "bob" and untimed["@timestamp"] == "2024-12-31T00:00:00.000000Z"
    assert "tags" not in untimed
    wrapped = parser.parse("2024-12-15 14:11:26 [p] <<hello carol>>", ctx)  # unwrap names the body
    assert wrapped["user"]["name"] == "carol" and wrapped["message"] == "2024-12-15 14:11:26 [p] <<hello carol>>"
    bad_time = parser.parse("2024-02-30 14:11:26 [p] hello dave", ctx)
    assert bad_time["user"]["name"] == "dave" and bad_time["tags"] == ["_dateparsefailure"]
    assert bad_time["@timestamp"] == "2024-12-31T00:00:00.000000Z"
    no_header = parser.parse("2024-12-15 garbage", ctx)  # looks timed, no form takes it
    assert no_header["tags"] == ["_grokparsefailure", "_dateparsefailure"]
    assert no_header["@timestamp"] == "2024-12-31T00:00:00.000000Z"


def test_a_form_that_fails_is_not_tried_at_every_position(tmp_path: Path) -> None:
    """The anchor is put outside the group a pattern reference expands to."""
    rules = load_rules(tmp_path / "openvpn.rules.toml", _rules_dir(tmp_path, RULES).library)
    assert all(h.expression.startswith("^") for h in rules.headers)
    assert rules.headers[0].search("x" * 50 + "2024-12-15 14:11:26 [p] ") is None


@pytest.mark.parametrize("header", ['header = 3', 'header = ["%{F_TIMED}", 4]'])
def test_a_header_that_is_not_expressions_is_an_error(tmp_path: Path, header: str) -> None:
    with pytest.raises(PatternError, match="header"):
        load_rules(tmp_path / "openvpn.rules.toml", _rules_dir(tmp_path, header + "\n").library)


def test_syslog_fields_are_completed_as_ecs_has_them() -> None:
    from ingest.parsers.syslog_fields import complete

    log: dict = {"syslog": {"priority": 165}}
    complete(log)
    assert log["syslog"] == {"priority": 165, "facility": {"code": 20, "name": "local4"},
                             "severity": {"code": 5, "name": "notice"}}
    named: dict = {"syslog": {"facility": {"name": "security"}, "severity": {"name": "error"}}}
    complete(named)  # busybox's aliases become the canonical names
    assert named["syslog"] == {"facility": {"code": 4, "name": "auth"}, "severity": {"code": 3, "name": "err"},
                               "priority": 35}
    odd: dict = {"syslog": {"priority": 999}}
    complete(odd)  # not a valid priority: nothing is derived from it
    assert odd == {"syslog": {"priority": 999}}
    sd: dict = {}
    complete(sd, '[a@1 k="v \\"q\\" \\]"][b]')
    assert sd == {"syslog": {"structured_data": {"a@1": {"k": 'v "q" ]'}, "b": {}}}}
