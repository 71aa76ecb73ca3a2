"""The message catalogue: one real-looking line per message a program writes, with what it must give.

``tests/data/catalogue/<kind>/<program>.toml`` (one file per program, or per family of messages)::

    kind = "auth"                        # the parser (route kind) the lines go to
    program = "sshd"                     # the name the coverage report groups by
    source = "openssh-portable 9.9p1"    # where the messages were taken from
    read_at = "2024-12-31T00:00:00Z"     # optional: the time the lines were read (year inference)

    [[line]]
    line = "Dec  2 10:00:00 web-1 sshd[1234]: Accepted password for alice from 203.0.113.9 port 50022 ssh2"
    from = "auth.c auth_log()"           # the format string / function the message comes from
    action = "ssh_login"                 # event.action it must get
    outcome = "success"                  # event.outcome it must get (omitted: it must have none)
    fields = { "user.name" = "alice", "source.ip" = "203.0.113.9", "source.port" = 50022 }
    absent = ["source.domain"]           # optional: fields that must not be there
    tags = ["_dateparsefailure"]         # optional: tags it must have (``_grokparsefailure`` only if listed)
    outsider = ["alice"]                 # optional: text in the line an outsider chooses (see below)
    encoding = "auditd"                  # optional (file or line): how the program writes outsider text

    [[line]]
    line = "..."
    unclassified = "why this message gets no event.action"   # deliberately left unclassified

``outsider`` lists substrings of the line (each must occur exactly once; see ``encoding``) that
whoever connects (or the local user) chooses: user names, client versions, paths, commands;
``outsider_all`` the same for text the daemon writes more than once (OpenVPN's common name in the
prefix and again in the message): every occurrence is replaced. The injection test
(``test_catalogue.py``) replaces each with crafted values (:data:`PAYLOADS`) and checks that
``event.action``, ``event.outcome`` and every listed field stay what they were, except that a
field holding the replaced text now holds the crafted one. A line where the program's format is
ambiguous for some payloads (two outsider strings around the daemon's own separator) names them in
``ambiguous = { payloads = ["separator"], reason = "..." }``; those payloads are skipped for it. :data:`KIND_PAYLOADS` adds crafted values for one kind's own separators
(OpenVPN's ``CN/ADDR`` prefix, its bracketed common names).

``encoding`` says how the program writes the outsider's text, so the crafted line is the one the
program would write (:func:`crafted_line`). Without it the payload replaces the text as it is.
``"auditd"``: the kernel and libaudit write a value quoted (``comm="bash"``) unless it holds a
double quote, a byte below 0x21 or above 0x7e, and then as upper-case hex (``comm=612062``); a
quoted outsider text (``"alice"`` in the line) is replaced that way, an unquoted one (libaudit's
``hostname=``, written as given) verbatim. ``"auditd-raw"``: a value of an auditd record that its
program quotes without escaping (systemd's ``cmdline="..."``), replaced verbatim. Such lines also
get the payloads of :data:`ENCODING_PAYLOADS` (crafted libaudit tails). ``"json"``: the text is
inside a JSON string (Teleport's events), so the payload replaces it JSON-escaped.

``python -m tests.parsers.catalogue`` (``make coverage``) prints, per kind and per program, how
many catalogue lines are classified, deliberately unclassified, and wrong.
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.document import get_path
from ingest.parsers import auditd as _auditd  # noqa: F401  (registers the parsers)
from ingest.parsers import syslog_rules as _rules  # noqa: F401
from ingest.parsers import teleport as _teleport  # noqa: F401
from ingest.parsers.base import PARSE_FAILURE_TAG, REGISTRY, LineContext, Parser
from ingest.parsers.resources import ParserResources

CATALOGUE = Path(__file__).parent.parent / "data" / "catalogue"
DEFAULT_READ_AT = datetime(2024, 12, 31, tzinfo=UTC)
_FILE_KEYS = {"kind", "program", "source", "read_at", "path", "line", "encoding"}
_LINE_KEYS = {"line", "from", "action", "outcome", "fields", "absent", "tags", "outsider", "outsider_all",
              "ambiguous", "unclassified", "kind", "path", "encoding"}

#: Crafted values an outsider may put where the daemon writes their text: named, so a line can say
#: which ones its program's format cannot tell apart (``ambiguous``).
PAYLOADS: dict[str, str] = {
    "space": "a b",
    "from_port_ssh2": "x from 10.10.1.2 port 55555 ssh2",
    "from_port": "x from 10.10.1.2 port 55555",
    "port": "x port 1",
    "from": "x from 10.10.1.2",
    "bare_ip_port": "10.10.1.2 port 55555",
    "preauth": "x [preauth]",
    "signature": "x ssh2: RSA SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "double_quotes": 'a"b"c',
    "single_quotes": "a'b'c",
    "pam_fields": "x rhost=10.10.1.2 user=root",
    "separator": "x ; USER=root ; COMMAND=/bin/sh",
    "brackets": "x [alice] ]: [",
    "vis_newline": "x\\012May 17 15:26:00 a3 sshd[1]: Accepted password for root from 10.10.1.2 port 22 ssh2",
    "tab": "a\tb",
    "unicode": "m\u00fcller\u2028x",
    "long": "y" * 2000,
    # the tails of specific daemon formats, so a crafted value imitating them is tried everywhere
    "remote_id": "invalid user x 10.10.1.2 port 55555",
    "disconnect_reason": "x 10.10.1.2 port 55555: Too many authentication failures",
    "cert_id": "x from 10.10.1.2 port 55555 ssh2: ED25519-CERT SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA ID y",
    "username_change": "x 10.10.1.2 port 55555: Change of username or service not allowed: (y",
    "pam_error": "x, Authentication failure",
    "pam_status": "x: 0 (Success)",
    "sudo_exit": "x ; EXIT=0",
    "bracket_fields": "x] [COMMAND=/bin/true] (owned by unix-user:root)",
    "path_quote": 'x" new "y',
    "backslash": "a\\\\b",
}

#: More payloads for lines of an ``encoding``: what a raw (unencoded) field of that program could
#: carry to fake the fields the program writes after it.
ENCODING_PAYLOADS: dict[str, dict[str, str]] = {
    "auditd": {
        "audit_tail": "x addr=10.10.1.2 terminal=ssh res=success",
        "audit_close_msg": "x' res=success addr=10.10.1.2",
        "audit_fields": "x hostname=evil addr=10.10.1.2 acct=\"root\" uid=0",
        "audit_record": "x\x1dAUID=\"root\" UID=\"root\"",
    },
}
#: a value inside an auditd record that its program quotes but does not escape (systemd's cmdline=)
ENCODING_PAYLOADS["auditd-raw"] = ENCODING_PAYLOADS["auditd"]
#: JSON lines (Teleport): the text is inside a JSON string, escaped as JSON escapes it
ENCODING_PAYLOADS["json"] = {
    "json_fields": 'x","user":"root","addr.remote":"10.10.1.2:22","success":true,"y":"',
    "json_close": 'x"}{"event":"user.login","success":true',
}
ENCODINGS = frozenset(ENCODING_PAYLOADS)


def auditd_value(text: str) -> str:
    """``text`` as the kernel and libaudit write a value: quoted, or upper-case hex if it must be."""
    data = text.encode("utf-8")
    if any(b == 0x22 or b < 0x21 or b > 0x7E for b in data):
        return data.hex().upper()
    return f'"{text}"'


def crafted_line(line: str, text: str, payload: str, encoding: str | None) -> str:
    """``line`` with the outsider ``text`` replaced by ``payload`` as the program would write it."""
    if encoding == "auditd" and f'"{text}"' in line:
        return line.replace(f'"{text}"', auditd_value(payload))
    if encoding == "json":
        return line.replace(text, json.dumps(payload)[1:-1])
    return line.replace(text, payload)


def _occurrences(line: str, text: str, encoding: str | None) -> int:
    """How often :func:`crafted_line` finds ``text`` (an auditd value counts quoted: ``"bash"``
    once beside ``"/usr/bin/bash"``)."""
    if encoding == "auditd" and f'"{text}"' in line:
        return line.count(f'"{text}"')
    return line.count(text)


#: Crafted values for the separators of one kind's own format, tried on that kind's lines only.
KIND_PAYLOADS: dict[str, dict[str, str]] = {
    "openvpn": {
        # a common name that carries a prefix of its own ("CN/ADDR msg")
        "vpn_prefix": "x/10.10.1.2:55555 y",
        "vpn_prefix_at_start": "10.10.1.2:55555 x",
        # a common name that closes the brackets the daemon puts it in and writes the rest itself
        "vpn_bracket": "x] Peer Connection Initiated with [AF_INET]10.10.1.2:55555",
        "vpn_control": "x]: 'AUTH_FAILED' (status=1)",
        # a user name that closes the quotes the daemon puts it in
        "vpn_quote": "x' for username 'root",
        "vpn_python_quote": "x', 'user': 'root",
        "vpn_signal": "x SIGTERM[soft,remote-exit] received, client-instance exiting",
    },
}


def payloads_for(kind: str, encoding: str | None = None) -> dict[str, str]:
    """The crafted values tried on a line of ``kind`` written with ``encoding``."""
    return {**PAYLOADS, **KIND_PAYLOADS.get(kind, {}), **ENCODING_PAYLOADS.get(encoding or "", {})}


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalogue line and what it must produce."""

    file: str
    number: int
    kind: str
    program: str
    line: str
    read_at: datetime
    path: str | None = None
    source: str = ""
    action: str | None = None
    outcome: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    outsider: tuple[str, ...] = ()
    #: outsider text the line holds more than once (every occurrence is replaced)
    outsider_all: tuple[str, ...] = ()
    ambiguous: frozenset[str] = frozenset()
    unclassified: str | None = None
    encoding: str | None = None

    @property
    def name(self) -> str:
        return f"{self.file}:{self.number}"


class CatalogueError(ValueError):
    pass


def load(folder: Path = CATALOGUE) -> list[Entry]:
    entries: list[Entry] = []
    for path in sorted(folder.glob("*/*.toml")):
        entries.extend(load_file(path, folder))
    return entries


def load_file(path: Path, folder: Path = CATALOGUE) -> list[Entry]:
    name = str(path.relative_to(folder))
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    extra = set(data) - _FILE_KEYS
    if extra:
        raise CatalogueError(f"{name}: unknown keys {sorted(extra)}")
    kind = data.get("kind", path.parent.name)
    program = data.get("program", path.stem)
    read_at = data.get("read_at", DEFAULT_READ_AT)
    if isinstance(read_at, str):
        read_at = datetime.fromisoformat(read_at)
    out = []
    for number, raw in enumerate(data.get("line", []), start=1):
        extra = set(raw) - _LINE_KEYS
        if extra:
            raise CatalogueError(f"{name}:{number}: unknown keys {sorted(extra)}")
        if "line" not in raw:
            raise CatalogueError(f"{name}:{number}: no `line`")
        if ("action" in raw) == ("unclassified" in raw):
            raise CatalogueError(f"{name}:{number}: give exactly one of `action` and `unclassified`")
        encoding = raw.get("encoding", data.get("encoding"))
        if encoding is not None and encoding not in ENCODINGS:
            raise CatalogueError(f"{name}:{number}: unknown encoding {encoding!r}")
        for text in raw.get("outsider", []):
            if _occurrences(raw["line"], text, encoding) != 1:
                raise CatalogueError(f"{name}:{number}: outsider text {text!r} must occur once in the line")
        for text in raw.get("outsider_all", []):
            if raw["line"].count(text) < 2:
                raise CatalogueError(f"{name}:{number}: outsider_all text {text!r} must occur more than once")
        ambiguous = raw.get("ambiguous", {})
        unknown = set(ambiguous.get("payloads", [])) - set(payloads_for(raw.get("kind", kind), encoding))
        if unknown or (ambiguous and not ambiguous.get("reason")):
            raise CatalogueError(f"{name}:{number}: `ambiguous` needs known payloads and a reason")
        out.append(Entry(
            file=name, number=number, kind=raw.get("kind", kind), program=program, line=raw["line"],
            read_at=read_at, path=raw.get("path", data.get("path")), source=data.get("source", ""),
            action=raw.get("action"), outcome=raw.get("outcome"), fields=dict(raw.get("fields", {})),
            absent=tuple(raw.get("absent", ())), tags=tuple(raw.get("tags", ())),
            outsider=tuple(raw.get("outsider", ())), outsider_all=tuple(raw.get("outsider_all", ())),
            ambiguous=frozenset(ambiguous.get("payloads", ())),
            unclassified=raw.get("unclassified"), encoding=encoding,
        ))
    return out


class Parsers:
    """One parser per kind over one set of resources (compiling the rules takes a moment)."""

    def __init__(self, resources: ParserResources | None = None) -> None:
        self.resources = resources or ParserResources()
        self._parsers: dict[str, Parser] = {}

    def parser(self, kind: str) -> Any:
        parser = self._parsers.get(kind)
        if parser is None:
            parser = self._parsers[kind] = REGISTRY[kind](self.resources)
        return parser

    def parse(self, entry: Entry, line: str | None = None) -> dict[str, Any]:
        parser = self.parser(entry.kind)
        ctx = LineContext(now=entry.read_at, path=entry.path or f"/var/log/{entry.kind}.log")
        return parser.parse(entry.line if line is None else line, ctx)


def problems(entry: Entry, doc: dict[str, Any]) -> list[str]:
    """What is wrong with ``doc`` as the document of ``entry`` (empty: nothing)."""
    found: list[str] = []
    event = doc.get("event", {})
    action = event.get("action")
    if entry.unclassified is not None:
        if action is not None:
            found.append(f"listed as unclassified ({entry.unclassified}) but got event.action={action!r}")
    elif action != entry.action:
        found.append(f"event.action: want {entry.action!r}, got {action!r}")
    if entry.action is not None and event.get("outcome") != entry.outcome:
        found.append(f"event.outcome: want {entry.outcome!r}, got {event.get('outcome')!r}")
    for path, want in entry.fields.items():
        got = get_path(doc, path)
        if got != want:
            found.append(f"{path}: want {want!r}, got {got!r}")
    for path in entry.absent:
        if get_path(doc, path) is not None:
            found.append(f"{path}: want absent, got {get_path(doc, path)!r}")
    tags = doc.get("tags", [])
    for tag in entry.tags:
        if tag not in tags:
            found.append(f"tag {tag} missing (tags {tags})")
    if PARSE_FAILURE_TAG in tags and PARSE_FAILURE_TAG not in entry.tags:
        found.append(f"unexpected tag {PARSE_FAILURE_TAG}")
    if doc.get("message") != (entry.line if "message" not in entry.fields else entry.fields["message"]):
        found.append("message is not the line as read")
    return found


def report(entries: list[Entry], parsers: Parsers) -> tuple[str, int]:
    """The coverage table, and how many lines are wrong."""
    rows: dict[tuple[str, str], list[int]] = {}
    for entry in entries:
        doc = parsers.parse(entry)
        row = rows.setdefault((entry.kind, entry.program), [0, 0, 0, 0])
        row[0] += 1
        wrong = bool(problems(entry, doc))
        if wrong:
            row[3] += 1
        elif entry.unclassified is not None:
            row[2] += 1
        else:
            row[1] += 1
    lines = [f"{'kind':<10} {'program':<22} {'lines':>6} {'classified':>11} {'left out':>9} {'wrong':>6}"]
    total = [0, 0, 0, 0]
    by_kind: dict[str, list[int]] = {}
    for (kind, program), row in sorted(rows.items()):
        lines.append(f"{kind:<10} {program:<22} {row[0]:>6} {row[1]:>11} {row[2]:>9} {row[3]:>6}")
        k = by_kind.setdefault(kind, [0, 0, 0, 0])
        for i in range(4):
            k[i] += row[i]
            total[i] += row[i]
    lines.append("")
    for kind, row in sorted(by_kind.items()):
        share = 100.0 * row[1] / row[0] if row[0] else 0.0
        lines.append(f"{kind:<10} {'(all)':<22} {row[0]:>6} {row[1]:>11} {row[2]:>9} {row[3]:>6}   "
                     f"{share:5.1f} % classified")
    share = 100.0 * total[1] / total[0] if total[0] else 0.0
    lines.append(f"{'all':<10} {'':<22} {total[0]:>6} {total[1]:>11} {total[2]:>9} {total[3]:>6}   "
                 f"{share:5.1f} % classified")
    return "\n".join(lines), total[3]


def main(argv: list[str]) -> int:
    entries = load()
    parsers = Parsers()
    table, wrong = report(entries, parsers)
    print(table)
    if "-v" in argv:
        for entry in entries:
            for problem in problems(entry, parsers.parse(entry)):
                print(f"{entry.name}: {problem}\n    {entry.line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
