"""auditd ``audit.log`` lines -> documents with the field names of Filebeat's ``auditd`` module.

One line is one auditd record: ``[node=N ]type=T msg=audit(EPOCH.MS:SEQ): key=value ...``. The
parser is a hand-written tokenizer (one compiled regex finds every ``key=value``), not grok: it is
on the hot path.

What a document holds
---------------------
- ``auditd.log.<key>`` for every ``key=value`` of the record, quoted (``"..."``) or not, and for the
  ``key=value`` pairs nested in ``msg='...'`` (user-space records): ``auditd.log.op``,
  ``auditd.log.acct``, ``auditd.log.addr``, ``auditd.log.res``, ``auditd.log.a0``... An unquoted value
  runs on over the words after it that hold no ``=`` (``op=adding group to /etc/group id=1004``
  gives ``op`` four words, as later Filebeat versions do); free text before the first pair
  (``auditd start,``, ``avc:``) is not a field. A single-quoted value holding ``key=value`` pairs
  (``msg='...'``) gives those pairs, not itself; one without (``msg='Unknown user'``) is kept as
  ``auditd.log.msg``. A key that appears
  twice with different values (``uid`` outside and inside ``msg``) becomes a list, first value
  first (as Filebeat does); ECS fields take the first value.
- Values ``?``, ``(null)`` and empty are left out, as Filebeat does (``key=(null)`` gives no
  ``auditd.log.key``); ``(none)`` is kept.
- ``auditd.log.record_type`` (``SYSCALL``), ``auditd.log.sequence`` (int), ``auditd.log.node``;
  ``@timestamp`` from the epoch (ISO 8601 UTC, ``Z``); ``event.action``: record type lowercased.
- Integers: ``pid ppid uid gid euid suid fsuid egid sgid fsgid ouid ogid auid ses id items item
  argc sig old_auid new_auid old_ses new_ses`` when the value is a decimal number (else the
  string is kept). Everything else stays a string (``a0`` of a SYSCALL is a hex syscall argument).
- **Unset ids**: ``4294967295`` and ``-1`` in an id field (``auid ses uid gid euid suid fsuid egid
  sgid fsgid ouid ogid id old_auid new_auid old_ses new_ses``) mean "not set" (``(uid_t)-1``):
  the field is left out of ``auditd.log`` and of its ECS field (``user.audit.id``...), and
  ``auditd.log.<key>_unset: true`` is set instead (``auid_unset``, ``ses_unset``,
  ``old_auid_unset``...). Filebeat writes ``"4294967295"``; we do not, so ranges and terms
  aggregations over ids are not polluted by the sentinel.
- LOGIN records: ``old auid=``/``new auid=``/``old ses=``/``new ses=`` (older kernels) and
  ``old-auid=``/``old-ses=`` (newer) both give ``old_auid``, ``new_auid``, ``old_ses``, ``new_ses``
  (the names of the Logstash config this replaces); ``auid``/``ses`` hold the new values in both
  forms, so ``user.audit.id`` is always the auid the login set.
- Hex: auditd hex-encodes a string value that holds a space, a quote or a control character and
  then writes it unquoted. An unquoted value of an even number of hex digits is decoded in the
  string fields auditd encodes (``_HEX_KEYS``: ``exe cmd acct comm cwd name path data old new
  proctitle``...) when the decoded bytes hold such a character (so ``old=64`` of CONFIG_CHANGE and
  ``name=6162`` stay as they are: auditd would have quoted them); EXECVE arguments ``aN`` (and ``aN[i]`` chunks) and
  ``proctitle`` are always decoded. Bytes that are not UTF-8 are kept as ``\\xNN``.
- ECS: ``process.pid ppid`` (int), ``process.name`` (comm), ``process.executable`` (exe),
  ``process.working_directory`` (cwd), ``process.title`` (proctitle, NULs as spaces),
  ``process.args`` + ``process.args_count`` (PROCTITLE arguments, EXECVE ``aN``, or USER_CMD's
  ``cmd`` split on white space as Filebeat does), ``process.command_line`` (EXECVE args joined,
  USER_CMD ``cmd``), ``user.id`` (uid), ``user.audit.id`` (auid), ``user.effective.id`` (euid),
  ``user.saved.id`` (suid), ``user.filesystem.id`` (fsuid), ``user.group.id`` (gid),
  ``user.effective.group.id``, ``user.saved.group.id``, ``user.filesystem.group.id``: ids are
  strings (ECS keyword). ``user.name`` (acct, else the enriched ``UID``), ``user.terminal``
  (terminal), ``user.audit.name`` / ``user.effective.name`` / ``user.group.name`` (enriched
  ``AUID``/``EUID``/``GID``), ``user.target.id`` (``id`` of ADD_USER/DEL_USER/USER_MGMT),
  ``group.id`` (``id`` of ADD_GROUP/DEL_GROUP/GRP_MGMT), ``host.architecture`` (arch, ``c000003e``
  -> ``x86_64``...), ``source.address`` + ``source.ip`` (``addr``, else ``src``; ``source.ip`` only
  for an IP address), ``destination.address`` + ``destination.ip`` (``dst``), ``related.ip``,
  ``related.user``, ``event.outcome`` ``success``/``failure`` from ``res`` (``success``, ``yes``,
  ``1`` / ``failed``, ``fail``, ``no``, ``0``) or else from ``success=yes/no`` (Filebeat 7.4
  copies ``res`` verbatim: ``"1"``).
- AVC: ``avc:  denied  { read write }`` gives ``auditd.log.seresult`` and ``auditd.log.seperms``.
- Enriched logs (``log_format = ENRICHED``): the fields after the ``\\x1d`` separator
  (``ARCH=x86_64 UID="root"``...) are ordinary ``key=value`` pairs with upper-case keys.

A line that does not start with ``[node=...] type=...``, or whose ``msg=audit(...)`` header is
malformed, gets tag ``_grokparsefailure``; the ``key=value`` pairs found are still kept in
``auditd.log``. A record without the ``msg=audit(...)`` header (``type=UNKNOWN[1329] msg=g``) is
not a failure (Filebeat reads it too) but has no ``@timestamp`` from the line. An epoch out of range
gets tag ``_dateparsefailure``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import ip_address
from typing import Any

from ingest.document import add_related, add_tag, format_timestamp
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext, Parser, register

DATE_FAILURE_TAG = "_dateparsefailure"

_HEADER_RE = re.compile(r"(?:node=(\S*) +)?type=(\S+)")
_AUDIT_RE = re.compile(r" *msg=audit\((\d+)(?:\.(\d+))?:(\d+)\):?")

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
# EXECVE arguments keep empty values ("").
_EXECVE_KV_RE = re.compile(r"""([A-Za-z_][\w\[\]-]*)=("[^"]*"?|[^\s"]*)|\S+""")
_EXECVE_ARG_RE = re.compile(r"a\d+(?:\[\d+\])?")
_LOGIN_OLD_NEW_RE = re.compile(r"(?<!\S)(old|new) (auid|ses)=")
_AVC_RE = re.compile(r"avc:\s+(\w+)\s+\{\s*([^}]*?)\s*\}")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})+")

_UNSET_VALUES = frozenset({"4294967295", "-1"})
_KEY_ALIASES = {"old-auid": "old_auid", "new-auid": "new_auid", "old-ses": "old_ses", "new-ses": "new_ses"}
_ID_KEYS = frozenset(
    "auid ses uid gid euid suid fsuid egid sgid fsgid ouid ogid id old_auid new_auid old_ses new_ses".split()
)
_INT_KEYS = _ID_KEYS | frozenset("pid ppid items item argc sig".split())
_HEX_KEYS = frozenset(
    "proctitle exe cmd acct comm cwd name path data old new file watch dir vm ocomm grp new_group "
    "invalid_context sw root_dir device cgroup old-chardev new-chardev old-disk new-disk old-fs "
    "new-fs old-net new-net old-rng new-rng".split()
)
# Bytes auditd writes as they are; a value with any other byte is hex-encoded.
_PLAIN_BYTES = bytes(b for b in range(0x21, 0x7F) if b != 0x22)
_ARCH = {
    "c000003e": "x86_64",
    "40000003": "i386",
    "c00000b7": "aarch64",
    "40000028": "arm",
    "80000015": "ppc64",
    "c0000015": "ppc64le",
    "80000016": "s390x",
    "16": "s390",
    "c00000f3": "riscv64",
}
_OUTCOME = {
    "success": "success",
    "yes": "success",
    "1": "success",
    "failed": "failure",
    "fail": "failure",
    "failure": "failure",
    "no": "failure",
    "0": "failure",
}
_USER_ID_RECORDS = frozenset({"ADD_USER", "DEL_USER", "USER_MGMT"})
_GROUP_ID_RECORDS = frozenset({"ADD_GROUP", "DEL_GROUP", "GRP_MGMT"})


@lru_cache(maxsize=4096)
def _ip(value: str) -> str | None:
    """``value`` normalised if it is an IP address, else None."""
    try:
        return str(ip_address(value))
    except ValueError:
        return None


@lru_cache(maxsize=1024)
def _second(sec: str) -> str:
    """``format_timestamp`` of a whole epoch second, without its ``.ffffffZ`` (lines share seconds)."""
    return format_timestamp(datetime.fromtimestamp(int(sec), UTC))[:-8]


def _timestamp(sec: str, frac: str | None) -> str:
    return f"{_second(sec)}.{(frac or '')[:6].ljust(6, '0')}Z"


def _unhex(value: str, always: bool) -> str | None:
    """Text of an auditd hex-encoded value, or None if ``value`` is not one."""
    if not _HEX_RE.fullmatch(value):
        return None
    data = bytes.fromhex(value)
    if not always and not data.translate(None, _PLAIN_BYTES):
        return None  # nothing auditd would have encoded: a plain value that looks like hex
    return data.decode("utf-8", "backslashreplace")


def _unquote(value: str) -> str:
    first = value[0]
    if first == '"' or first == "'":
        return value[1:-1] if len(value) > 1 and value[-1] == first else value[1:]
    return value


def _read_pairs(text: str) -> tuple[dict[str, Any], bool]:
    """``auditd.log`` from the ``key=value`` pairs of ``text``; True if a key came twice."""
    pairs = _KV_RE.findall(text)
    log: dict[str, Any] = dict(pairs)
    expected = len(pairs)
    if "" in log:
        del log[""]
        expected -= pairs.count(_JUNK)
    repeated = len(log) != expected
    if repeated:  # slow path: the first value first, as Filebeat makes a list
        log = {}
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
    decoded = {}
    for key in _HEX_KEYS.intersection(log):
        value = log[key]
        if type(value) is str and value[0] != '"' and value[0] != "'":
            text_value = _unhex(value, key == "proctitle")
            if text_value is not None:
                decoded[key] = text_value
    if '"' in text or "'" in text:
        for key, value in log.items():
            if type(value) is list:
                log[key] = [_unquote(v) for v in value]
            elif value[0] == '"' or value[0] == "'":
                log[key] = _unquote(value)
    if decoded:  # after unquoting: a decoded value may begin with a quote of its own
        log.update(decoded)
    for key in _KEY_ALIASES.keys() & log.keys():
        log[_KEY_ALIASES[key]] = log.pop(key)
    return log, repeated


def _read_execve(text: str) -> dict[str, Any]:
    """EXECVE pairs: every argument kept (also ""), unquoted ones hex-decoded."""
    log: dict[str, Any] = {}
    for key, value in _EXECVE_KV_RE.findall(text):
        if not key:
            continue
        if value[:1] == '"':
            value = _unquote(value)
        elif _EXECVE_ARG_RE.fullmatch(key):
            value = _unhex(value, True) or value
        elif value == "" or value == "?" or value == "(null)":
            continue
        log.setdefault(key, value)
    return log


def _execve_args(log: dict[str, Any]) -> list[str]:
    args: list[str] = []
    n = 0
    while True:
        key = f"a{n}"
        value = log.get(key)
        if value is not None:
            args.append(value)
        elif f"{key}[0]" in log:
            chunks = []
            i = 0
            while (chunk := log.get(f"{key}[{i}]")) is not None:
                chunks.append(chunk)
                i += 1
            args.append("".join(chunks))
        else:
            return args
        n += 1


@register
class AuditdParser(Parser):
    """auditd records (``/var/log/audit/audit.log``), raw or enriched format."""

    kind = "auditd"
    dataset = "auditd.log"

    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        doc = self.base_document(line)
        try:
            _parse_into(doc, line.rstrip("\r\n"))
        except Exception:  # a bug must not lose the line: index it, tagged
            doc = self.base_document(line)
            add_tag(doc, PARSE_FAILURE_TAG)
        return doc


def _parse_into(doc: dict[str, Any], text: str) -> None:
    header = _HEADER_RE.match(text)
    if header is None:
        add_tag(doc, PARSE_FAILURE_TAG)
        log, _ = _read_pairs(text)
        if log:
            doc["auditd"] = {"log": log}
        return
    node, rtype = header.group(1, 2)
    doc["event"]["action"] = rtype.lower()
    rest = text[header.end() :]
    audit = _AUDIT_RE.match(rest)
    head: dict[str, Any] = {"record_type": rtype}
    if audit is not None:
        sec, frac, seq = audit.groups()
        head["sequence"] = int(seq)
        rest = rest[audit.end() :]
        try:
            doc["@timestamp"] = _timestamp(sec, frac)
        except (OverflowError, ValueError, OSError):
            add_tag(doc, DATE_FAILURE_TAG)
    elif rest.lstrip().startswith("msg=audit("):
        add_tag(doc, PARSE_FAILURE_TAG)
    if node:
        head["node"] = node

    if rtype == "EXECVE":
        log = _read_execve(rest)
        repeated = False
    else:
        if rtype == "LOGIN" and " auid=" in rest:
            rest = _LOGIN_OLD_NEW_RE.sub(r"\1_\2=", rest)
        log, repeated = _read_pairs(rest)
    if rtype == "LOGIN":
        _login(log)
    # ECS fields are made from the text values (the first one of a repeated key).
    first = {k: (v[0] if type(v) is list else v) for k, v in log.items()} if repeated else log
    _ecs(doc, first, rtype)
    if rtype == "PROCTITLE" and "process" in doc:
        log["proctitle"] = doc["process"]["title"]
    elif (rtype == "AVC" or rtype == "USER_AVC") and "avc:" in rest:
        avc = _AVC_RE.search(rest)
        if avc is not None:
            log["seresult"] = avc.group(1)
            log["seperms"] = avc.group(2).split()
    for key in _INT_KEYS.intersection(log):
        value = log[key]
        if type(value) is str:
            if value in _UNSET_VALUES and key in _ID_KEYS:
                del log[key]
                log[key + "_unset"] = True
            elif value.isdigit():
                log[key] = int(value)
        else:  # a list of a repeated key
            value = [_number(v) for v in value if v not in _UNSET_VALUES]
            if value:
                log[key] = value
            else:
                del log[key]
                log[key + "_unset"] = True
    head.update(log)
    doc["auditd"] = {"log": head}


def _number(value: Any) -> Any:
    return int(value) if type(value) is str and value.isdigit() else value


def _login(log: dict[str, Any]) -> None:
    """Both LOGIN forms give old_/new_ auid and ses, and auid/ses hold the new values."""
    for short, new in (("auid", "new_auid"), ("ses", "new_ses")):
        if short in log and new not in log:
            log[new] = log[short]
        elif new in log and short not in log:
            log[short] = log[new]


def _id(value: str | None) -> str | None:
    return None if value is None or value in _UNSET_VALUES else value


def _ecs(doc: dict[str, Any], log: dict[str, Any], rtype: str) -> None:
    """ECS fields from the ``auditd.log`` text values (copies: ``auditd.log`` keeps them)."""
    get = log.get
    process: dict[str, Any] = {}
    value = get("pid")
    if value is not None and value.isdigit():
        process["pid"] = int(value)
    value = get("ppid")
    if value is not None and value.isdigit():
        process["ppid"] = int(value)
    value = get("comm")
    if value is not None:
        process["name"] = value
    value = get("exe")
    if value is not None:
        process["executable"] = value
    value = get("cwd")
    if value is not None:
        process["working_directory"] = value
    if rtype == "EXECVE":
        args = _execve_args(log)
        if args:
            process["args"] = args
            process["args_count"] = len(args)
            process["command_line"] = " ".join(args)
    elif rtype == "PROCTITLE":
        value = get("proctitle")
        if value is not None:
            args = value.split("\x00")
            while args and not args[-1]:
                args.pop()
            process["title"] = " ".join(args)
            process["args"] = args
            process["args_count"] = len(args)
    elif rtype == "USER_CMD":
        value = get("cmd")
        if value is not None:
            process["command_line"] = value
            args = value.split()
            process["args"] = args
            process["args_count"] = len(args)
    if process:
        doc["process"] = process

    user: dict[str, Any] = {}
    value = _id(get("uid"))
    if value is not None:
        user["id"] = value
    value = _id(get("gid"))
    if value is not None:
        user["group"] = {"id": value}
    for uid_key, gid_key, holder in (
        ("euid", "egid", "effective"),
        ("suid", "sgid", "saved"),
        ("fsuid", "fsgid", "filesystem"),
    ):
        uid = _id(get(uid_key))
        gid = _id(get(gid_key))
        if uid is not None or gid is not None:
            part: dict[str, Any] = {}
            if uid is not None:
                part["id"] = uid
            if gid is not None:
                part["group"] = {"id": gid}
            user[holder] = part
    value = _id(get("auid"))
    if value is not None:
        user["audit"] = {"id": value}
    value = get("acct") or get("UID")
    if value is not None:
        user["name"] = value
        add_related(doc, "user", value)
    value = get("terminal")
    if value is not None:
        user["terminal"] = value
    if "AUID" in log or "EUID" in log or "GID" in log:  # enriched format
        for key, holder in (("AUID", "audit"), ("EUID", "effective"), ("GID", "group")):
            value = get(key)
            if value is not None:
                user.setdefault(holder, {})["name"] = value
    value = _id(get("id"))
    if value is not None:
        if rtype in _USER_ID_RECORDS:
            user["target"] = {"id": value}
        elif rtype in _GROUP_ID_RECORDS:
            doc["group"] = {"id": value}
    if user:
        doc["user"] = user

    value = get("arch")
    if value is not None:
        doc["host"] = {"architecture": _ARCH.get(value.lower(), value)}

    value = get("res") or get("success")
    if value is not None:
        outcome = _OUTCOME.get(value.lower())
        if outcome is not None:
            doc["event"]["outcome"] = outcome

    value = get("addr") or get("src")
    if value is not None:
        doc["source"] = _address(doc, value)
    value = get("dst")
    if value is not None:
        doc["destination"] = _address(doc, value)


def _address(doc: dict[str, Any], value: str) -> dict[str, Any]:
    side: dict[str, Any] = {"address": value}
    ip = _ip(value)
    if ip is not None:
        side["ip"] = ip
        add_related(doc, "ip", ip)
    return side
