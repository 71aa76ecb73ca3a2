"""The ``type: session`` document made of one closed session, and its deterministic id.

The document is a pure function of the stored closure (login, end, reason), so a redelivered
event that re-emits a closure yields the byte-identical document under the same id.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ingest.document import add_related, format_timestamp, get_path, set_path
from ingest.sessions.events import from_micros

#: ``event.action`` of every session document (the sshd PAM line already uses ``session_closed``).
SESSION_ACTION = "session_ended"


def session_id(kind: str, key: str, login_ts: int) -> str:
    """Id of the session opened by the login at ``login_ts`` (µs) on ``key``: stable across workers and runs."""
    return hashlib.blake2b(f"session\x00{kind}\x00{key}\x00{login_ts}".encode(), digest_size=16).hexdigest()


#: session documents go to ``<index.prefix>sessions-YYYY.MM.DD`` (the day of the login): the only
#: indices where the writer may overwrite (a correction, see :func:`version`); events stay create-only
INDEX_INFIX = "sessions-"


def index_prefix(events_prefix: str) -> str:
    return events_prefix + INDEX_INFIX


#: external version of a session document whose end was not seen (``timeout``, ``replaced``) ...
VERSION_PROVISIONAL = 1
#: ... and of one with its real end (a logout): indexed over the provisional one, never under it
VERSION_FINAL = 2


def version(doc: dict[str, Any]) -> int:
    """The external version a session document is indexed with: it only moves forward, so a late
    provisional document (re-emitted after its correction) cannot overwrite the corrected one.

    Not the end time: a session closed as ``replaced`` ends at the next login, later than its
    real logout found afterwards."""
    session = doc.get("session")
    return VERSION_FINAL if isinstance(session, dict) and "logout" in session else VERSION_PROVISIONAL


def build(kind: str, key: str, closed: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(doc_id, doc)`` for one closure as stored by :mod:`ingest.sessions.state`."""
    login, end, reason = closed["login"], closed["end"], closed["r"]
    start_us: int = login["ts"]
    end_us: int | None = closed["end_ts"]
    doc_id = session_id(kind, key, start_us)

    doc: dict[str, Any] = orjson.loads(orjson.dumps(login["f"]))  # a deep copy, fast
    if end is not None:
        for parent, name in (("user", "name"), ("source", "ip"), ("source", "port")):
            value = _get2(end["f"], parent, name)
            if value is not None and _get2(doc, parent, name) is None:
                set_path(doc, f"{parent}.{name}", value)
    host = doc.setdefault("host", {})
    if "hostname" not in host and isinstance(host.get("name"), str):
        host["hostname"] = host["name"]
    if not host:
        del doc["host"]

    event: dict[str, Any] = {
        "kind": "event",
        "category": ["session"],
        "type": ["end"],
        "action": SESSION_ACTION,
        "dataset": "session",
        "start": format_timestamp(from_micros(start_us)),
        "outcome": "success" if end is not None else "unknown",
    }
    session: dict[str, Any] = {
        "id": doc_id,
        "kind": kind,
        "end_reason": reason,
        "login": {"action": login["a"]},
    }
    if closed.get("was"):
        session["corrected_from"] = closed["was"]  # first indexed as timeout/replaced
    if end_us is not None:
        event["end"] = format_timestamp(from_micros(end_us))
    if end is not None:
        micros = end_us - start_us if end_us is not None else 0
        event["duration"] = micros * 1000
        session["duration_s"] = micros / 1_000_000
        session["duration_min"] = round(micros / 60_000_000, 6)
        session["logout"] = {"action": end["a"]}
        reason_detail = get_path(end["f"], "event.reason")
        if reason_detail is not None:
            event["reason"] = reason_detail

    doc.update({"@timestamp": event["start"], "type": "session", "event": event, "session": session})
    for kind_, parent, name in (("user", "user", "name"), ("user", "teleport", "login"), ("ip", "source", "ip"),
                                ("hosts", "host", "hostname")):
        add_related(doc, kind_, _get2(doc, parent, name))
    doc["message"] = _message(doc, kind, reason)
    return doc_id, doc


def _get2(doc: dict[str, Any], parent: str, name: str) -> Any:
    """``get_path(doc, "parent.name")`` without splitting the path."""
    holder = doc.get(parent)
    return holder.get(name) if isinstance(holder, dict) else None


def _message(doc: dict[str, Any], kind: str, reason: str) -> str:
    user = get_path(doc, "user.name", "?")
    host = get_path(doc, "host.hostname", "?")
    src = _get2(doc, "source", "ip")
    owner = get_path(doc, "system.auth.ssh.key.owner")
    parts = [f"{kind} session of {user}"]
    if owner:
        parts.append(f"(key {owner})")
    parts.append(f"on {host}")
    if src:
        parts.append(f"from {src}")
    duration = _get2(doc, "session", "duration_s")
    tail = f"{duration} s, {reason}" if duration is not None else f"ended: {reason}"
    return " ".join(parts) + ": " + tail
