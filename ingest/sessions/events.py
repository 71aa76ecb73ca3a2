"""Which documents open, close or annotate a session, and under which key.

This is the only place that knows the parsers' field names. A document yields at most one
:class:`Mark`: its session kind, the pairing key, its role and the fields a session keeps from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ingest.document import get_path, parse_timestamp

Role = Literal["login", "logout", "attr"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

#: Fields a session document takes from its login (when present there).
LOGIN_FIELDS = (
    "user.name",
    "source.ip",
    "source.port",
    "source.geo",
    "source.as",
    "host.hostname",
    "host.name",
    "process.name",
    "process.pid",
    "system.auth.ssh.method",
    "system.auth.ssh.key.fingerprint",
    "system.auth.ssh.key.owner",
    "teleport.sid",
    "teleport.login",
    "openvpn.virtual_ip",
)
#: Fields a session document takes from its logout.
LOGOUT_FIELDS = ("user.name", "source.ip", "source.port", "event.reason")
#: Fields an ``attr`` event (OpenVPN address assignment) adds to an open session.
ATTR_FIELDS = ("openvpn.virtual_ip",)


#: not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: several times slower, and one is made per event that counts; hashable all the same, never changed
@dataclass(slots=True, unsafe_hash=True)
class Mark:
    """One document's part in a session.

    ``ts`` is ``@timestamp`` in integer microseconds since the epoch (exact durations);
    ``action`` with ``ts`` identifies the event (a redelivered event has the same pair).
    """

    kind: str
    key: str
    role: Role
    ts: int
    action: str
    fields: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The JSON-able form kept in the store."""
        return {"ts": self.ts, "a": self.action, "f": self.fields}


def to_micros(ts: datetime) -> int:
    """Microseconds since the epoch, exact."""
    return (ts - _EPOCH) // _MICRO


def from_micros(us: int) -> datetime:
    return _EPOCH + us * _MICRO



Tree = tuple[tuple[str, Any], ...]


def _tree(paths: tuple[str, ...]) -> Tree:
    """The dotted ``paths`` as a tree: ``((name, subtree or None for a leaf), ...)``, in the
    order of the paths (those that share a first part are consecutive in each list above, so a
    walk of the tree meets them in the same order as a walk of the list)."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        groups.setdefault(head, [])
        if rest:
            groups[head].append(rest)
    return tuple((head, _tree(tuple(rest)) if rest else None) for head, rest in groups.items())


#: the field lists above as trees (a session event reads up to 15 fields, 6 objects)
_TREES = {"login": _tree(LOGIN_FIELDS), "logout": _tree(LOGOUT_FIELDS), "attr": _tree(ATTR_FIELDS)}


def _pick(doc: dict[str, Any], tree: Tree, top: bool = True) -> dict[str, Any]:
    """The fields of ``tree`` that ``doc`` has, empty values ("", {}) left out, objects made only
    for what they hold; ``host.name`` only as a string."""
    out: dict[str, Any] = {}
    for name, sub in tree:
        value = doc.get(name)
        if value is None:
            continue
        if sub is None:
            if value == "" or value == {}:
                continue
            out[name] = value
        elif type(value) is dict:
            picked = _pick(value, sub, False)
            if top and name == "host" and not isinstance(picked.get("name", ""), str):
                del picked["name"]
            if picked:
                out[name] = picked
    return out


def _host(doc: dict[str, Any]) -> str | None:
    host = doc.get("host")
    if type(host) is not dict:
        return None
    for key in ("hostname", "name"):
        value = host.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def mark_of(doc: dict[str, Any]) -> Mark | None:
    """The session part of ``doc``, or None when it plays none (or lacks what pairing needs)."""
    event = doc.get("event")
    action = event.get("action") if isinstance(event, dict) else None
    if action not in SESSION_ACTIONS:
        return None
    return mark_for(doc, action)


def mark_for(doc: dict[str, Any], action: Any) -> Mark | None:
    """:func:`mark_of` for a document whose ``event.action`` (a dict's) is ``action``, one of
    :data:`SESSION_ACTIONS` (the caller has checked it)."""
    kind_role = _classify(doc, action)
    if kind_role is None:
        return None
    kind, role, key = kind_role
    raw_ts = doc.get("@timestamp")
    if not isinstance(raw_ts, str):
        return None
    try:
        ts = to_micros(parse_timestamp(raw_ts))
    except (ValueError, OverflowError):
        return None
    return Mark(kind, key, role, ts, str(action), _pick(doc, _TREES[role]))


#: The programs that log a connection's login and logout: sshd, and from OpenSSH 9.8 on the
#: per-connection sshd-session (both lines come from the same process, so host + pid still pair).
SSHD_PROGRAMS = frozenset({"sshd", "sshd-session"})

#: Every event.action that can play a part in a session: anything else is dismissed at once.
SESSION_ACTIONS = frozenset({"ssh_login", "session_closed", "ssh_disconnect", "vpn_connect", "vpn_disconnect",
                              "vpn_ip_assigned", "session.start", "session.end"})


def _classify(doc: dict[str, Any], action: Any) -> tuple[str, Role, str] | None:
    doc_type = doc.get("type")
    if doc_type == "auth":
        return _ssh(doc, action)
    if doc_type == "openvpn":
        return _openvpn(doc, action)
    if doc_type == "teleport":
        return _teleport(doc, action)
    return None


def _ssh(doc: dict[str, Any], action: Any) -> tuple[str, Role, str] | None:
    role: Role
    if action == "ssh_login":
        if doc["event"].get("outcome") == "failure":  # most ssh_login lines of a brute-force burst
            return None
        role = "login"
    elif action == "session_closed":
        role = "logout"
    elif action == "ssh_disconnect" and _str(get_path(doc, "user.name")):
        role = "logout"  # without a user it is a preauth disconnect of a failed login
    else:
        return None
    process = doc.get("process")
    if type(process) is not dict or process.get("name") not in SSHD_PROGRAMS:
        return None
    pid = process.get("pid")
    host = _host(doc)
    if host is None or isinstance(pid, bool) or not isinstance(pid, int | str) or str(pid) == "":
        return None
    return "ssh", role, f"ssh|{host}|{pid}"


def _openvpn(doc: dict[str, Any], action: Any) -> tuple[str, Role, str] | None:
    roles: dict[Any, Role] = {"vpn_connect": "login", "vpn_disconnect": "logout", "vpn_ip_assigned": "attr"}
    role = roles.get(action)
    user = _str(get_path(doc, "user.name"))
    ip = _str(get_path(doc, "source.ip"))
    port = _str(get_path(doc, "source.port"))
    if port is None and ip is not None and ":" in ip:
        port = "-"  # OpenVPN writes an IPv6 real address without its port, in every line of the client
    if role is None or user is None or ip is None or port is None:
        return None
    return "openvpn", role, f"openvpn|{_host(doc) or '-'}|{user}|{ip}|{port}"


def _teleport(doc: dict[str, Any], action: Any) -> tuple[str, Role, str] | None:
    roles: dict[Any, Role] = {"session.start": "login", "session.end": "logout"}
    role = roles.get(action)
    sid = _str(get_path(doc, "teleport.sid"))
    if role is None or sid is None:
        return None
    return "teleport", role, f"teleport|{sid}"
