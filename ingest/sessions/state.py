"""The state of one pairing key and the pure transitions on it.

A key's state is a JSON-able dict, stored whole under one Redis key (or in a dict)::

    {"open": LOGIN | None,          # the session open on this key, if any
     "orph": [LOGOUT, ...],         # logouts whose login has not been seen yet, by time
     "tomb": [CLOSED, ...]}         # sessions closed recently, newest last

    LOGIN / LOGOUT = {"ts": event time (µs), "a": event.action, "f": fields kept, "at": processed (µs)}
    CLOSED = {"login": LOGIN, "end": LOGOUT | None, "r": end reason, "end_ts": µs | None, "at": µs,
              "was": the end reason it had before its real end was seen (absent: never corrected)}

Transitions never do I/O and never read a clock (``now`` is an argument), so the stores can rerun
them after an optimistic-lock conflict and both stores behave the same. Each transition appends
the closures to emit to ``out.closed`` and what happened to ``out.counts``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ingest.document import get_path, set_path
from ingest.sessions.config import SessionConfig
from ingest.sessions.events import Mark

State = dict[str, Any]

#: Closed sessions remembered per key (PID reuse makes several per key possible).
MAX_TOMBS_PER_KEY = 8

#: end_reason of a session closed because a newer login took its key (sshd PID reused).
REPLACED = "replaced"
#: end_reason of a session closed by expire() without having seen its end.
TIMEOUT = "timeout"

#: the end reasons of a session closed without seeing its end: its real logout still corrects it
CORRECTABLE = frozenset({TIMEOUT, REPLACED})

_LOGOUT_REASON = {
    "session_closed": "logout",
    "ssh_disconnect": "disconnect",
    "vpn_disconnect": "disconnect",
    "session.end": "logout",
}


@dataclass(frozen=True, slots=True)
class Ttl:
    """The configured durations in microseconds."""

    timeout: int
    orphan: int
    tomb: int

    @classmethod
    def of(cls, config: SessionConfig) -> Ttl:
        def us(td: Any) -> int:
            return int(td.total_seconds() * 1_000_000)

        return cls(us(config.timeout), us(config.orphan_logout_ttl), us(config.tombstone_ttl))


@dataclass(slots=True)
class Outcome:
    """What one run of transitions produced: closures to emit (kind, key, CLOSED) and counters."""

    closed: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def empty(state: State | None) -> bool:
    return not state or (state.get("open") is None and not state.get("orph") and not state.get("tomb"))


def new_state() -> State:
    return {"open": None, "orph": [], "tomb": []}


def end_reason(action: str) -> str:
    return _LOGOUT_REASON.get(action, "logout")


def _close(state: State, kind: str, key: str, login: dict[str, Any], end: dict[str, Any] | None,
           reason: str, end_ts: int | None, now: int, out: Outcome) -> None:
    tomb = {"login": login, "end": end, "r": reason, "end_ts": end_ts, "at": now}
    tombs = state["tomb"]
    tombs.append(tomb)
    tombs.sort(key=lambda t: t["login"]["ts"])
    del tombs[:-MAX_TOMBS_PER_KEY]
    out.closed.append((kind, key, tomb))
    out.counts[f"closed_{reason}"] += 1


def apply(state: State, mark: Mark, now: int, out: Outcome) -> None:
    """Apply one event to its key's state."""
    if mark.role == "login":
        _login(state, mark, now, out)
    elif mark.role == "logout":
        _logout(state, mark, now, out)
    else:
        _attr(state, mark, out)


def _login(state: State, mark: Mark, now: int, out: Outcome) -> None:
    login = dict(mark.record(), at=now)
    opened = state["open"]
    if opened is not None and opened["ts"] == mark.ts:
        out.counts["duplicate_login"] += 1
        return
    for tomb in state["tomb"]:
        if tomb["login"]["ts"] == mark.ts:
            # Redelivered after the session closed: do not reopen; emit the same document again
            # (its id is the same, Elasticsearch answers 409) in case the first emission was lost.
            out.counts["duplicate_login"] += 1
            out.closed.append((mark.kind, mark.key, tomb))
            return
    later = [t["login"]["ts"] for t in state["tomb"] if t["login"]["ts"] > mark.ts]
    if opened is not None and opened["ts"] > mark.ts:
        later.append(opened["ts"])
    next_login = min(later) if later else None
    mine = [o for o in state["orph"] if o["ts"] >= mark.ts and (next_login is None or o["ts"] < next_login)]
    if mine:
        # The earliest closes the session; the others are its other logout lines (sshd writes two).
        state["orph"] = [o for o in state["orph"] if o not in mine]
        out.counts["paired_orphan"] += 1
        out.counts["extra_logout"] += len(mine) - 1
        orphan = mine[0]
        _close(state, mark.kind, mark.key, login, orphan, end_reason(orphan["a"]), orphan["ts"], now, out)
        return
    if next_login is not None:
        # A late login older than one already known on this key (PID reused): its session ended
        # before the newer one began, when exactly is unknown.
        _close(state, mark.kind, mark.key, login, None, REPLACED, next_login, now, out)
        return
    if opened is not None:
        _close(state, mark.kind, mark.key, opened, None, REPLACED, mark.ts, now, out)
    state["open"] = login
    out.counts["opened"] += 1


def _logout(state: State, mark: Mark, now: int, out: Outcome) -> None:
    logout = dict(mark.record(), at=now)
    opened = state["open"]
    best: dict[str, Any] | None = None  # the closed session whose login is the latest before the logout
    for tomb in state["tomb"]:
        if tomb["login"]["ts"] <= mark.ts and (best is None or tomb["login"]["ts"] > best["login"]["ts"]):
            best = tomb
    if opened is not None and opened["ts"] <= mark.ts and (best is None or opened["ts"] >= best["login"]["ts"]):
        state["open"] = None
        _close(state, mark.kind, mark.key, opened, logout, end_reason(mark.action), mark.ts, now, out)
        return
    if best is not None:
        end = best["end"]
        if end is not None and end["ts"] == mark.ts and end["a"] == mark.action:
            out.counts["duplicate_logout"] += 1
            out.closed.append((mark.kind, mark.key, best))
        elif end is None and best["r"] in CORRECTABLE and (best["end_ts"] is None or mark.ts <= best["end_ts"]):
            # The real end of a session closed as timeout/replaced: its document is emitted again,
            # corrected (same id, a higher version: it overwrites the first one, see doc.version).
            was = best["r"]
            best.update({"end": logout, "r": end_reason(mark.action), "end_ts": mark.ts, "at": now, "was": was})
            out.closed.append((mark.kind, mark.key, best))
            out.counts[f"corrected_{was}"] += 1
        else:
            # A second logout line of a closed session (sshd logs both "Disconnected from user"
            # and the PAM "session closed").
            out.counts["extra_logout"] += 1
        return
    for orphan in state["orph"]:
        if orphan["ts"] == mark.ts and orphan["a"] == mark.action:
            out.counts["duplicate_logout"] += 1
            return
    state["orph"].append(logout)
    state["orph"].sort(key=lambda o: o["ts"])
    out.counts["orphaned"] += 1


def _attr(state: State, mark: Mark, out: Outcome) -> None:
    opened = state["open"]
    if opened is None or opened["ts"] > mark.ts:
        out.counts["attr_ignored"] += 1
        return
    for path in ("openvpn.virtual_ip",):
        value = get_path(mark.fields, path)
        if value is not None:
            set_path(opened["f"], path, value)
    out.counts["attr"] += 1


def expire(state: State, kind: str, key: str, now: int, ttl: Ttl, out: Outcome) -> None:
    """Close the open session if it timed out; forget orphans and tombstones past their time."""
    opened = state["open"]
    if opened is not None and opened["at"] + ttl.timeout <= now:
        state["open"] = None
        _close(state, kind, key, opened, None, TIMEOUT, None, now, out)
    kept = [o for o in state["orph"] if o["at"] + ttl.orphan > now]
    out.counts["orphan_expired"] += len(state["orph"]) - len(kept)
    state["orph"] = kept
    state["tomb"] = [t for t in state["tomb"] if t["at"] + ttl.tomb > now]


def evict(state: State, what: str, out: Outcome) -> None:
    """Drop part of a state to keep the store bounded: ``open``, ``orph`` or ``tomb``."""
    if what == "open":
        if state["open"] is not None:
            state["open"] = None
            out.counts["evicted_open"] += 1
    elif what == "orph":
        out.counts["evicted_orphans"] += len(state["orph"])
        state["orph"] = []
    else:
        out.counts["evicted_closed"] += len(state["tomb"])
        state["tomb"] = []


#: not frozen (two are made per key and transaction; a frozen __init__ is several times slower)
@dataclass(slots=True, unsafe_hash=True)
class IndexEntry:
    """Where a key's state ranks in the store's indexes (None: not in that index)."""

    open: int | None  # login time of the open session (eviction: oldest login first)
    orph: int | None  # processing time of the oldest orphan
    tomb: int | None  # processing time of the newest closure
    due: int | None  # earliest processing time at which expire() has something to do
    last: int  # latest deadline: the state is useless after it


def index_of(state: State, ttl: Ttl) -> IndexEntry:
    deadlines = []
    opened = state["open"]
    if opened is not None:
        deadlines.append(opened["at"] + ttl.timeout)
    deadlines += [o["at"] + ttl.orphan for o in state["orph"]]
    deadlines += [t["at"] + ttl.tomb for t in state["tomb"]]
    return IndexEntry(
        open=opened["ts"] if opened is not None else None,
        orph=min(o["at"] for o in state["orph"]) if state["orph"] else None,
        tomb=max(t["at"] for t in state["tomb"]) if state["tomb"] else None,
        due=min(deadlines) if deadlines else None,
        last=max(deadlines) if deadlines else 0,
    )
