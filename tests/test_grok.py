"""The grok engine: Logstash field references on pygrok, types, nesting, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import PatternError
from ingest.grok import PatternLibrary, field_path, read_pattern_file


def library(tmp_path: Path, text: str) -> PatternLibrary:
    (tmp_path / "mine.grok").write_text(text)
    return PatternLibrary([tmp_path])


def test_field_reference_forms() -> None:
    assert field_path("[source][ip]") == ("source", "ip")
    assert field_path("source.ip") == ("source", "ip")
    assert field_path("ip") == ("ip",)


def test_nested_fields_types_and_bundled_patterns(tmp_path: Path) -> None:
    lib = library(tmp_path, "MYPORT port %{POSINT:[source][port]:int}\n")
    grok = lib.compile("from %{IP:[source][ip]} %{MYPORT} took %{NUMBER:[event][duration]:float}s "
                       "user %{USER:user.name}", origin="test")
    assert grok.match("from 81.2.69.160 port 51836 took 1.5s user bob") == {
        "source": {"ip": "81.2.69.160", "port": 51836},
        "event": {"duration": 1.5},
        "user": {"name": "bob"},
    }
    assert grok.match("nothing like it") is None


def test_named_groups_with_references_and_empty_captures_dropped(tmp_path: Path) -> None:
    lib = library(tmp_path, "")
    grok = lib.compile(r"^(?<[user][name]>\w+):(?<[user][id]>\d*)$", origin="test")
    assert grok.match("alice:") == {"user": {"name": "alice"}}
    assert grok.match("alice:7") == {"user": {"name": "alice", "id": "7"}}


def test_failed_conversion_keeps_the_string(tmp_path: Path) -> None:
    lib = library(tmp_path, "ANY [a-z0-9]+\n")
    grok = lib.compile("%{ANY:[n]:int}", origin="test")
    assert grok.match("12") == {"n": 12}
    assert grok.match("x1") == {"n": "x1"}


def test_our_definitions_override_bundled_ones(tmp_path: Path) -> None:
    lib = library(tmp_path, "WORD [a-c]+\n")
    assert lib.compile("^%{WORD:w}$", origin="t").match("abc") == {"w": "abc"}
    assert lib.compile("^%{WORD:w}$", origin="t").match("xyz") is None


def test_bad_line_names_file_line_and_pattern(tmp_path: Path) -> None:
    (tmp_path / "bad.grok").write_text("# comment\nGOOD \\d+\nLONELY\n")
    with pytest.raises(PatternError) as e:
        read_pattern_file(tmp_path / "bad.grok")
    assert f"{tmp_path / 'bad.grok'}:3" in str(e.value)
    assert "LONELY" in str(e.value)
    assert e.value.line == 3


def test_invalid_regex_is_traced_to_its_definition(tmp_path: Path) -> None:
    lib = library(tmp_path, "FINE \\d+\nBROKEN (unclosed\nUSES %{FINE} %{BROKEN}\n")
    with pytest.raises(PatternError) as e:
        lib.compile("%{USES}", origin="rules.toml rule x")
    assert e.value.pattern == "BROKEN"
    assert e.value.line == 2
    assert str(e.value).startswith(f"{tmp_path / 'mine.grok'}:2")


def test_unknown_pattern_is_named(tmp_path: Path) -> None:
    lib = library(tmp_path, "OUTER x %{NOSUCH}\n")
    with pytest.raises(PatternError) as e:
        lib.compile("%{OUTER}", origin="rules.toml rule y")
    assert "NOSUCH" in str(e.value)
    assert "OUTER" in str(e.value)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PatternError):
        PatternLibrary([tmp_path / "nope"])


def test_shipped_patterns_all_compile() -> None:
    from ingest.parsers.resources import ParserResources

    resources = ParserResources()
    for kind in ("auth", "commands", "openvpn", "shell"):
        assert resources.rules(kind).rules, kind


def test_literal_prefix_of_rules() -> None:
    from ingest.parsers.rules import literal_prefix

    assert literal_prefix("^Accepted %{WORD:m} for") == "Accepted "
    assert literal_prefix("^error: maximum") == "error: maximum"
    assert literal_prefix("^Invalid user ?%{USER}") == "Invalid user"  # the optional space is not required
    assert literal_prefix("^%{PAM_SERVICE}: session") == ""
    assert literal_prefix("Accepted") == ""  # not anchored: it may match anywhere


def test_literal_prefix_looks_into_references_and_named_groups() -> None:
    from ingest.parsers.rules import literal_prefix

    defs = {"PAM_SERVICE": "%{PAM_MODULE}\\(%{DATA:s}:%{WORD:t}\\)", "PAM_MODULE": "(?<[pam][module]>pam_[\\w-]+)",
            "WORD": "\\b\\w+\\b", "WHOLE": "abc", "CHOICE": "ab|cd", "MAYBE": "(?:x )?y"}
    assert literal_prefix("^%{PAM_SERVICE}: session", defs.get) == "pam_"
    assert literal_prefix("^%{WHOLE} %{WORD}", defs.get) == "abc "  # a fully literal pattern continues
    assert literal_prefix("^%{CHOICE}x", defs.get) == ""  # an alternation: either start is possible
    assert literal_prefix("^%{MAYBE}", defs.get) == ""
    assert literal_prefix("^%{WHOLE}?x", defs.get) == ""  # an optional reference
    assert literal_prefix("^%{UNKNOWN}x", defs.get) == ""
    assert literal_prefix("^(?<[a][b]>Accepted|Failed) x", defs.get) == ""
    assert literal_prefix("^(?<[a][b]>abc)? x", defs.get) == ""
    assert literal_prefix("^(?<[a][b]>ab[(]c)d", defs.get) == "ab"  # a class holding a paren
    assert literal_prefix("^(?<[a][b]>-) x", defs.get) == "- x"
    assert literal_prefix("^(?:error: )?Received", defs.get) == ""


def test_rules_with_a_literal_start_skip_other_lines() -> None:
    from datetime import UTC, datetime

    from ingest.parsers.base import LineContext
    from ingest.parsers.resources import ParserResources
    from ingest.parsers.syslog_rules import AuthParser

    parser = AuthParser(ParserResources())
    accepted = next(r for r in parser.rules.rules if r.name == "sshd_accepted")
    assert accepted.prefix == "Accepted "
    doc = parser.parse("May 17 15:26:00 a3 sshd[1]: Accepted password for x from 10.0.0.1 port 2 ssh2",
                       LineContext(now=datetime(2020, 12, 31, tzinfo=UTC)))
    assert doc["system"]["auth"]["ssh"]["event"] == "Accepted"


def test_writer_adds_constants_fresh_per_document_and_tags(tmp_path: Path) -> None:
    lib = library(tmp_path, "")
    grok = lib.compile(r"^%{WORD:[event][action]} %{INT:[process][pid]:int}$", origin="test")
    write = grok.writer(((("event", "category"), ["authentication"]), (("event", "outcome"), "success"),
                         (("labels",), {"team": "ops"})), ("ssh", "ssh"))
    first: dict = {"event": {"kind": "event"}}
    write(grok.search("login 42"), first)
    assert first == {"event": {"kind": "event", "action": "login", "category": ["authentication"],
                               "outcome": "success"},
                     "process": {"pid": 42}, "labels": {"team": "ops"}, "tags": ["ssh"]}
    first["event"]["category"].append("session")  # a later stage mutating one document...
    first["labels"]["team"] = "dev"
    second: dict = {}
    write(grok.search("logout 7"), second)
    assert second["event"]["category"] == ["authentication"]  # ...does not change the next one
    assert second["labels"] == {"team": "ops"}


def test_writer_later_non_empty_group_wins_and_scalar_replaces_object(tmp_path: Path) -> None:
    lib = library(tmp_path, "")
    # two groups for one field (as SSH_SOURCE has for IPv4/IPv6): the non-empty one is kept
    grok = lib.compile(r"^(?:%{IPV4:[source][ip]}|%{IPV6:[source][ip]})$", origin="test")
    assert grok.match("2001:db8::1") == {"source": {"ip": "2001:db8::1"}}
    assert grok.match("81.2.69.160") == {"source": {"ip": "81.2.69.160"}}
    # a capture whose path is the parent of another's: the later write decides, as field by field
    grok = lib.compile(r"^%{WORD:[a][b]} %{WORD:[a]} %{WORD:[a][c]}$", origin="test")
    assert grok.match("x y z") == {"a": {"c": "z"}}
    grok = lib.compile(r"^%{WORD:[a][b]} %{WORD:[a]}$", origin="test")
    assert grok.match("x y") == {"a": "y"}
    nested = lib.compile(r"^%{WORD:[a][b]}$", origin="test")
    doc: dict = {"a": "scalar already there"}
    nested.apply(nested.search("x"), doc)
    assert doc == {"a": {"b": "x"}}
