"""The ``key=value`` pairs of an auditd record (the tokenizer of :mod:`ingest.parsers.auditd`).

Quoting and hex rules as that module's docstring says: a value never takes text from a
neighbouring field, whatever a program wrote into ``comm``, ``exe``, ``acct`` or a command line.
"""

from __future__ import annotations

import re
from typing import Any

# One scan finds every key=value. Each match consumes a whole token, so the scan never restarts in
# the middle of a word, and possessive quantifiers never backtrack (linear on any input). A value is
#   "..."          a quoted value;
#   '...'          a quoted value without key=value inside;
#   word word...   an unquoted value, running on over the following words without "=".
# "?", "(null)" and empty values never match (Filebeat drops them). The other alternatives capture
# nothing (key ""): "key='" opening a msg='...' that holds key=value pairs (so the pairs inside are
# found by the same scan), and any other token (free text, "hostname=?", the closing quote of msg).
_KV_RE = re.compile(
    r"""([A-Za-z_][\w\[\]-]*+)="""
    r"""(?!(?:\?|\(null\))(?:\s|'|$))"""
    r"""("[^"]++"|'(?![^']*=)[^']++'|[^\s"']++(?:\s++[^\s"'=]++(?=[\s']|$))*+)"""
    r"""|[A-Za-z_][\w\[\]-]*+='"""
    r"""|\S++"""
)
_JUNK = ("", "")
_QUOTES = "\"'"
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_KEY_ALIASES = {"old-auid": "old_auid", "new-auid": "new_auid", "old-ses": "old_ses", "new-ses": "new_ses"}
_HEX_KEYS = frozenset(
    "proctitle exe cmd acct comm cwd name path data old new file watch dir vm ocomm grp new_group "
    "invalid_context sw root_dir device cgroup old-chardev new-chardev old-disk new-disk old-fs "
    "new-fs old-net new-net old-rng new-rng apparmor operation profile label info denied_mask "
    "requested_mask target peer peer_label".split()
)
# Bytes auditd writes as they are; a value with any other byte is hex-encoded.
_PLAIN_BYTES = bytes(b for b in range(0x21, 0x7F) if b != 0x22)


def unhex(value: str, always: bool) -> str | None:
    """Text of an auditd hex-encoded value, or None if ``value`` is not one."""
    if not _HEX_RE.fullmatch(value):
        return None
    data = bytes.fromhex(value)
    if not always and not data.translate(None, _PLAIN_BYTES):
        return None  # nothing auditd would have encoded: a plain value that looks like hex
    return data.decode("utf-8", "backslashreplace")


def unquote(value: str) -> str:
    first = value[0]
    if first == '"' or first == "'":
        return value[1:-1] if len(value) > 1 and value[-1] == first else value[1:]
    return value


def read_pairs(text: str) -> tuple[dict[str, Any], bool]:
    """``auditd.log`` from the ``key=value`` pairs of ``text``; True if a key came twice."""
    pairs = _KV_RE.findall(text)
    log: dict[str, Any] = dict(pairs)
    expected = len(pairs)
    if "" in log:
        del log[""]
        expected -= pairs.count(_JUNK)
    repeated = len(log) != expected
    if repeated:
        log = _first_values(pairs)
    # The values replaced below keep their place in ``log``, so the order these keys are visited in
    # (a set's) does not show in the output.
    decoded = {}
    for key in _HEX_KEYS.intersection(log):
        value = log[key]
        if type(value) is str and value[0] != '"' and value[0] != "'":
            text_value = unhex(value, key == "proctitle")
            if text_value is not None:
                decoded[key] = text_value
    if '"' in text or "'" in text:
        if repeated or '"?"' in text or "'?'" in text:
            _unquote_values(log)
        else:  # the usual case: every quoted value is whole ("..." or '...'), none is "?"
            log = {k: v[1:-1] if v[0] in _QUOTES else v for k, v in log.items()}
    if decoded:  # after unquoting: a decoded value may begin with a quote of its own
        log.update(decoded)
    if "-auid=" in text or "-ses=" in text:  # only then can a key of _KEY_ALIASES be there
        for key in [k for k in log if k in _KEY_ALIASES]:  # in order: output independent of the hash seed
            log[_KEY_ALIASES[key]] = log.pop(key)
    return log, repeated


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``auditd.log`` of pairs with a repeated key: the first value first, as Filebeat makes a list."""
    log: dict[str, Any] = {}
    for key, value in pairs:
        if key:
            old = log.get(key)
            if old is None:
                log[key] = value
            elif type(old) is list:
                if value not in old:
                    old.append(value)
            elif old != value:
                log[key] = [old, value]
    return log


def _unquote_values(log: dict[str, Any]) -> None:
    """Quotes off every value (also in lists); a quoted ``"?"`` is dropped."""
    unknown = []
    for key, value in log.items():
        if type(value) is list:
            log[key] = [unquote(v) for v in value]
        elif value[0] == '"' or value[0] == "'":
            value = log[key] = unquote(value)
            if value == "?":  # libaudit's acct="?" (an unknown user), exe="?": nothing known
                unknown.append(key)
    for key in unknown:
        del log[key]
