"""auditd ``audit.log`` lines -> documents with the field names of Filebeat's ``auditd`` module.

One line is one auditd record: ``[node=N ]type=T msg=audit(EPOCH.MS:SEQ): key=value ...``; the
kernel's own form ``type=1400 audit(EPOCH:SEQ): ...`` (what it prints when no auditd listens,
also after ``audit: `` in a kernel log line) is read too. The parser is a hand-written tokenizer
(one compiled regex finds every ``key=value``), not grok: it is on the hot path.

What a document holds
---------------------
- ``auditd.log.<key>`` for every ``key=value`` of the record, quoted (``"..."``) or not, and for the
  ``key=value`` pairs nested in ``msg='...'`` (user-space records): ``auditd.log.op``,
  ``auditd.log.acct``, ``auditd.log.addr``, ``auditd.log.res``, ``auditd.log.a0``... An unquoted value
  runs on over the words after it that hold no ``=`` (``op=adding group to /etc/group id=1004``
  gives ``op`` four words, as later Filebeat versions do); free text before the first pair
  (``auditd start,``, ``avc:``) is not a field. A single-quoted value holding ``key=value`` pairs
  (``msg='...'``) gives those pairs, not itself; one without (``msg='Unknown user'``) is kept as
  ``auditd.log.msg``. A key that appears twice with different values (``uid`` outside and inside
  ``msg``) becomes a list, first value first (as Filebeat does); ECS fields take the first value.
- Values ``?``, ``(null)`` and empty are left out, as Filebeat does (``key=(null)`` gives no
  ``auditd.log.key``), and so is a quoted ``"?"`` (libpam's ``acct="?"`` for an unknown user:
  Filebeat would make it ``user.name: "?"``); ``(none)`` is kept.
- ``auditd.log.record_type`` (``SYSCALL``; a number or ``UNKNOWN[n]`` is written as the name the
  record-type table gives it), ``auditd.log.sequence`` (int), ``auditd.log.node``; ``@timestamp``
  from the epoch (ISO 8601 UTC, ``Z``).
- ``event.action`` (the record type lowercased), ``event.category`` / ``event.type`` (as Filebeat
  sets them): from ``patterns/auditd.types.toml`` (:mod:`ingest.parsers.auditd_types`).
- Integers: ``pid ppid uid gid euid suid fsuid egid sgid fsgid ouid ogid auid ses id items item
  argc sig old_auid new_auid old_ses new_ses`` when the value is a decimal number (else the
  string is kept). Everything else stays a string (``a0`` of a SYSCALL is a hex syscall argument).
- **Unset ids**: ``4294967295`` (``(uid_t)-1``, "not set") and ``-1`` in an id field are kept as
  written, as Filebeat does (``user.audit.id: "4294967295"``, ``auditd.log.auid: 4294967295``), and
  flagged: ``auditd.log.<key>_unset: true`` (``auid_unset``, ``ses_unset``, ``old_auid_unset``...).
- LOGIN records: ``old auid=``/``new auid=``/``old ses=``/``new ses=`` (older kernels) and
  ``old-auid=``/``old-ses=`` (newer) both give ``old_auid``, ``new_auid``, ``old_ses``, ``new_ses``
  (the names of the Logstash config this replaces); ``auid``/``ses`` hold the new values in both
  forms, so ``user.audit.id`` is always the auid the login set.
- User-space records end as libaudit writes them: ``... exe=X hostname=H addr=A terminal=T
  res=R'``. ``hostname`` is written as given (a client's host name, unescaped), so ``hostname``,
  ``addr``, ``terminal`` and ``res`` are read from the end of the message backwards and the text of
  ``hostname`` is not searched for pairs: a crafted host name cannot move ``source.ip``,
  ``event.outcome`` or add fields.
- Hex: auditd hex-encodes a string value that holds a space, a double quote or a control or
  non-ASCII byte and then writes it unquoted (``acct``, ``comm``, ``exe``, ``cwd``, ``name``,
  EXECVE arguments...). An unquoted value of an even number of hex digits is decoded in the string
  fields auditd encodes (``_HEX_KEYS`` of :mod:`ingest.parsers.auditd_pairs`) when the decoded
  bytes hold such a byte (so ``old=64`` of CONFIG_CHANGE and ``name=6162`` stay as they are:
  auditd would have quoted them); EXECVE arguments and ``proctitle`` are always decoded. Bytes
  that are not UTF-8 are kept as ``\\xNN``.
- **EXECVE**: the arguments (``aN``, chunks ``aN[i]`` joined) go to ``process.args`` /
  ``process.args_count`` / ``process.command_line`` only, never one field each (a record with
  thousands of arguments would pass the index's field limit): ``auditd.log`` keeps ``argc``. A
  continuation record (its first argument is ``aN``, N > 0) starts ``process.args`` with
  ``[... N truncated arguments ...]``, as Filebeat does.
- ECS fields (``process.*``, ``user.*``, ``source.*``, ``event.outcome``...): see
  :mod:`ingest.parsers.auditd_ecs`.
- AVC: ``avc:  denied  { read write }`` gives ``auditd.log.seresult`` and ``auditd.log.seperms``;
  AppArmor's AVC records give ``auditd.log.apparmor`` (``DENIED``...), ``operation``, ``profile``...
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
from typing import Any

from ingest.document import add_tag, format_timestamp
from ingest.parsers.auditd_ecs import UNSET_VALUES, add_ecs
from ingest.parsers.auditd_pairs import read_pairs as _read_pairs
from ingest.parsers.auditd_pairs import unhex as _unhex
from ingest.parsers.auditd_pairs import unquote as _unquote
from ingest.parsers.auditd_types import RecordTable, record_table
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext, Parser, register

DATE_FAILURE_TAG = "_dateparsefailure"

# The header and its msg=audit(EPOCH:SEQ) in one match (the audit part is optional: a record without
# it is read too). The type is possessive, so the audit part never starts inside it.
_HEADER_RE = re.compile(r"(?:node=(\S*) +)?type=(\S++)(?: *(?:msg=)?audit\((\d+(?:\.\d+)?):(\d+)\):?)?")
#: how far into a line the kernel's ``audit: type=`` may start (after a kernel log line's prefix)
_KERNEL_PREFIX_MAX = 200

# EXECVE arguments keep empty values ("").
_EXECVE_KV_RE = re.compile(r"""([A-Za-z_][\w\[\]-]*)=("[^"]*"?|[^\s"]*)|\S+""")
_EXECVE_ARG_RE = re.compile(r"a(\d+)(?:\[(\d+)\]|(_len))?")
_LOGIN_OLD_NEW_RE = re.compile(r"(?<!\S)(old|new) (auid|ses)=")
_AVC_RE = re.compile(r"avc:\s+(\w+)\s+\{\s*([^}]*?)\s*\}")

_ID_KEYS = frozenset(
    "auid ses uid gid euid suid fsuid egid sgid fsgid ouid ogid id old_auid new_auid old_ses new_ses".split()
)
_INT_KEYS = _ID_KEYS | frozenset("pid ppid items item argc sig".split())
#: values that say nothing (Filebeat drops them)
_NOTHING = frozenset({"?", "", "(null)"})
#: the ENRICHED fields that make ECS fields: honoured in a user-space record only after its "\x1d"
_ENRICHED_ECS_KEYS = frozenset({"UID", "AUID", "EUID", "GID"})


@lru_cache(maxsize=1024)
def _second(sec: str) -> str:
    """``format_timestamp`` of a whole epoch second, without its ``.ffffffZ`` (lines share seconds)."""
    return format_timestamp(datetime.fromtimestamp(int(sec), UTC))[:-8]


@lru_cache(maxsize=4096)
def _timestamp(epoch: str) -> str:
    """``@timestamp`` of an ``EPOCH[.FRACTION]`` (the records of one event share it)."""
    sec, _, frac = epoch.partition(".")
    return f"{_second(sec)}.{frac[:6].ljust(6, '0')}Z"


def _user_tail(rest: str) -> tuple[str, tuple[str, str, str, str | None], str] | None:
    """A user-space record split into the text to scan for pairs and the values of its libaudit tail.

    libaudit ends every message with ``exe=X [sauid=N ]hostname=H addr=A terminal=T[ res=R]'`` and
    writes ``H`` as it was given (unencoded: a client's host name). So the tail is read from the
    end backwards (``res``, ``terminal``, ``addr``: no spaces in what libaudit writes there), and
    the host name is everything between the first `` hostname=`` after ``exe=`` and the real
    `` addr=``. Returns the text before the host name, (hostname, addr, terminal, res) and the
    ENRICHED fields (""), or None when the record does not end that way (it is then scanned whole).
    """
    start = rest.find(" msg='")
    if start < 0:
        return None
    # RAW format ends with the closing quote; ENRICHED appends "\x1d" and interpreted fields to it.
    # (A crafted host name may hold "'\x1d": only the last one, or none when the line ends with
    # the quote, is auditd's.)
    end = len(rest)
    enriched = ""
    if rest[-1] == "'":
        end -= 1
    else:
        quote = rest.rfind("'\x1d", start)
        if quote >= 0:
            enriched = rest[quote + 2:]
            end = quote
    t = rest.rfind(" terminal=", start, end)
    if t < 0:
        return None
    space = rest.find(" ", t + 10, end)
    if space < 0:
        terminal, res = rest[t + 10:end], None
    elif rest.startswith(" res=", space) and rest.find(" ", space + 1, end) < 0:
        terminal, res = rest[t + 10:space], rest[space + 5:end]
    else:
        return None
    a = rest.rfind(" addr=", start, t)
    if a < 0 or rest.find(" ", a + 6, t) >= 0:
        return None
    exe = rest.find(" exe=", start, a)
    h = rest.find(" hostname=", exe if exe >= 0 else start, a + 1)
    if h < 0:
        return None
    return rest[:h], (rest[h + 10:a], rest[a + 6:t], terminal, res), enriched


def _read_execve(text: str) -> tuple[dict[str, Any], list[str]]:
    """EXECVE: the arguments in order (also "", unquoted ones hex-decoded), and the other pairs."""
    log: dict[str, Any] = {}
    args: dict[int, str] = {}
    chunks: dict[int, dict[int, str]] | None = None
    for key, value in _EXECVE_KV_RE.findall(text):
        if not key:
            continue
        if key[0] == "a" and key[1:2].isdigit():
            arg = _EXECVE_ARG_RE.fullmatch(key)
            if arg is not None:
                if arg.group(3) is not None:  # aN_len: the length of a chunked argument
                    continue
                value = _unquote(value) if value[:1] == '"' else (_unhex(value, True) or value)
                if arg.group(2) is None:
                    args.setdefault(int(arg.group(1)), value)
                else:
                    if chunks is None:
                        chunks = {}
                    chunks.setdefault(int(arg.group(1)), {}).setdefault(int(arg.group(2)), value)
                continue
        if value[:1] == '"':
            value = _unquote(value)
        elif value == "" or value == "?" or value == "(null)":
            continue
        log.setdefault(key, value)
    if chunks:
        for n, parts in chunks.items():
            args.setdefault(n, "".join(parts[i] for i in sorted(parts)))
    if not args:
        return log, []
    order = sorted(args)
    values = [args[n] for n in order]
    if order[0] > 0:
        values.insert(0, f"[... {order[0]} truncated arguments ...]")
    return log, values


@register
class AuditdParser(Parser):
    """auditd records (``/var/log/audit/audit.log``), raw or enriched format."""

    kind = "auditd"
    dataset = "auditd.log"

    def __init__(self, resources: Any = None) -> None:
        super().__init__(resources)
        self.table = record_table(getattr(resources, "folders", None))

    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        doc = self.base_document(line)
        try:
            _parse_into(doc, line.rstrip("\r\n"), self.table)
        except Exception:  # a bug must not lose the line: index it, tagged
            doc = self.base_document(line)
            add_tag(doc, PARSE_FAILURE_TAG)
        return doc


def _kernel_form(text: str) -> str:
    """The record in a kernel log line (``... kernel: [ 1.2] audit: type=1400 audit(...)``), or ``text``."""
    at = text.find("audit: type=", 0, _KERNEL_PREFIX_MAX)
    return text[at + 7:] if at >= 0 else text


def _parse_into(doc: dict[str, Any], text: str, table: RecordTable) -> None:
    if text[:5] != "type=" and text[:5] != "node=":
        text = _kernel_form(text)
    header = _HEADER_RE.match(text)
    if header is None:
        add_tag(doc, PARSE_FAILURE_TAG)
        log, _ = _read_pairs(text)
        if log:
            doc["auditd"] = {"log": log}
        return
    node, written, epoch, seq = header.groups()
    rtype, spec = table.lookup(written)
    event = doc["event"]
    event["action"] = spec.action if spec is not None else rtype.lower()
    rest = text[header.end() :]
    head: dict[str, Any] = {"record_type": rtype}
    if seq is not None:
        head["sequence"] = int(seq)
        try:
            doc["@timestamp"] = _timestamp(epoch)
        except (OverflowError, ValueError, OSError):
            add_tag(doc, DATE_FAILURE_TAG)
    elif rest.lstrip().startswith(("msg=audit(", "audit(")):
        add_tag(doc, PARSE_FAILURE_TAG)
    if node:
        head["node"] = node

    args: list[str] | None = None
    repeated = lists = False  # a key came twice in the record / in its enriched fields
    if rtype == "EXECVE":
        log, args = _read_execve(rest)
    else:
        if rtype == "LOGIN" and " auid=" in rest:
            rest = _LOGIN_OLD_NEW_RE.sub(r"\1_\2=", rest)
        split = _user_tail(rest) if "'" in rest else None
        if split is None:
            log, repeated = _read_pairs(rest)
        else:
            head_text, (host, addr, terminal, res), enriched = split
            log, repeated = _read_pairs(head_text)
            for key in _ENRICHED_ECS_KEYS.intersection(log):
                del log[key]  # inside the message, not auditd's: a program's unescaped text
            if enriched:
                extra, lists = _read_pairs(enriched)
                log.update(extra)
            if host not in _NOTHING:
                log["hostname"] = host[1:-1] if len(host) > 1 and host[0] == '"' == host[-1] else host
            if addr not in _NOTHING:
                log["addr"] = addr
            if terminal not in _NOTHING:
                log["terminal"] = terminal
            if res is not None and res not in _NOTHING:
                log["res"] = res
    if rtype == "LOGIN":
        _login(log)
    # ECS fields are made from the text values (the first one of a repeated key).
    first = {k: (v[0] if type(v) is list else v) for k, v in log.items()} if repeated else log
    add_ecs(doc, first, rtype, args)
    if spec is not None:
        if spec.category:
            event["category"] = list(spec.category)
        kinds = spec.type_by_op.get(first.get("op") or "", spec.type) if spec.type_by_op else spec.type
        if kinds:
            event["type"] = list(kinds)
    if rtype == "PROCTITLE" and "process" in doc:
        log["proctitle"] = doc["process"]["title"]
    elif (rtype == "AVC" or rtype == "USER_AVC") and "avc:" in rest:
        avc = _AVC_RE.search(rest)
        if avc is not None:
            log["seresult"] = avc.group(1)
            log["seperms"] = avc.group(2).split()
    _numbers(log, repeated or lists)
    head.update(log)
    doc["auditd"] = {"log": head}


def _numbers(log: dict[str, Any], repeated: bool) -> None:
    """The integer fields as ints, and ``<key>_unset`` for an unset id (in the record's order)."""
    unset = []
    # A value replaced keeps its place in ``log``: the order of the set does not show.
    for key in _INT_KEYS.intersection(log):
        value = log[key]
        if repeated and type(value) is not str:  # a list of a repeated key (without repeats: all str)
            if key in _ID_KEYS and UNSET_VALUES.intersection(value):
                unset.append(key)
            log[key] = [_number(v) for v in value]
        elif value.isdigit():
            log[key] = int(value)
            if value == "4294967295" and key in _ID_KEYS:
                unset.append(key)
        elif value == "-1" and key in _ID_KEYS:
            log[key] = -1
            unset.append(key)
    if unset:
        if len(unset) > 1:
            order = list(log)
            unset.sort(key=order.index)  # the flags are new keys: added in the record's order
        for key in unset:
            log[key + "_unset"] = True


def _number(value: Any) -> Any:
    if type(value) is str:
        if value.isdigit():
            return int(value)
        if value[:1] == "-" and value[1:].isdigit():
            return int(value)
    return value


def _login(log: dict[str, Any]) -> None:
    """Both LOGIN forms give old_/new_ auid and ses, and auid/ses hold the new values."""
    for short, new in (("auid", "new_auid"), ("ses", "new_ses")):
        if short in log and new not in log:
            log[new] = log[short]
        elif new in log and short not in log:
            log[short] = log[new]
