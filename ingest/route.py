"""Decode Filebeat events and decide their kind, exactly as the worker and ``parse`` both do.

Filebeat 6.x sends ``source``, ``offset``, ``beat.hostname``, ``fileset.module``; 7.x/8.x send
``log.file.path``, ``log.offset``, ``host.name`` (an object), ``agent.*``, ``event.module`` /
``fileset.name`` for modules. The kind is taken, in order, from ``fields.log_type``, the module
(``auditd``), then the first path glob that matches the file path. An event that cannot be decoded
or routed becomes a :class:`~ingest.model.DeadLetter` with a stable code and a one-line reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ingest.document import parse_timestamp
from ingest.journald import header_line, is_journald
from ingest.journald import kind_of as journald_kind
from ingest.logsafe import escape
from ingest.model import DeadLetter
from ingest.numbers import TOO_LARGE

_loads = orjson.loads
#: copied for each document id (``Routed.document_id``); never updated itself
_ID_HASHER = hashlib.blake2b(digest_size=16)

#: the largest ``long`` (``log.offset``'s type in the index template)
LONG_MAX = 2**63 - 1

KINDS = frozenset({"auth", "commands", "auditd", "openvpn", "teleport", "shell"})
#: the kinds whose lines start with a syslog header (a journald entry gets one written for it)
HEADER_KINDS = frozenset({"auth", "commands", "openvpn", "shell"})

DEFAULT_PATH_ROUTES: list[tuple[str, str]] = [
    ("*/auth.log*", "auth"),
    ("*/secure*", "auth"),
    ("*/commands.log*", "commands"),
    ("*/audit/audit.log*", "auditd"),
    ("*/audit.log*", "auditd"),
    ("*/shell_*.log*", "shell"),
    ("*openvpn*", "openvpn"),
    ("*/teleport/*.log*", "teleport"),
    ("*teleport*", "teleport"),
]


#: entries of the path -> kind cache (ingest.caches); a full cache starts over
PATH_CACHE_LIMIT = 10_000

class RoutingConfig(BaseModel):
    """How an event's kind is chosen."""

    model_config = ConfigDict(extra="forbid")

    path_routes: list[tuple[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_PATH_ROUTES),
        description="(glob, kind) pairs tried in order on the file path (log.file.path or source); "
                    "the defaults are the paths of the Logstash config we replace.")
    field_route: str = Field("fields.log_type", description="Dotted field whose value, if a known kind, "
                             "decides the kind before modules and paths.")
    max_event_bytes: int = Field(1_048_576, gt=0, description="Events larger than this are dead-lettered.")


def quote(value: Any, limit: int = 60) -> str:
    """At most ``limit`` characters of a value, for error messages (dead-letter reasons, logs):
    control characters, line separators and lone surrogates escaped (:func:`ingest.logsafe.escape`),
    so an event's text cannot forge a line of the worker's log."""
    text = value if isinstance(value, str) else repr(value)
    return escape(text if len(text) <= limit else text[:limit] + "...")


@dataclass(slots=True)
class Routed:
    """A decoded, routed event: what the parser needs plus the Filebeat fields we keep."""

    raw: bytes
    kind: str
    message: str
    path: str | None
    offset: int | None
    host: str | None
    read_at: datetime | None
    event: dict[str, Any]

    def document_id(self) -> str:
        """Deterministic ``_id``: a redelivered event gets the same one, so ``create`` answers 409.

        With an offset: host + path + offset + the line itself (a rotated file restarts offsets, the
        line makes a reused offset a different id); without: the raw event.
        """
        if self.offset is not None:  # the same bytes as host, path and offset encoded apart from the line
            text = f"{self.host}\0{self.path}\0{self.offset}\0{self.message}"
            try:
                data = text.encode()  # the same bytes as surrogatepass for text without lone surrogates
            except UnicodeEncodeError:
                data = text.encode("utf-8", "surrogatepass")
        else:
            data = self.raw
        hasher = _ID_HASHER.copy()  # cheaper than a new blake2b(digest_size=16) with its keyword
        hasher.update(data)
        return hasher.hexdigest()


def _big_int(text: str) -> int:
    # Python refuses to convert more than 4,300 digits (CVE-2020-10735): no field holds such a number
    if len(text.lstrip("-")) > 4000:
        return -TOO_LARGE if text.startswith("-") else TOO_LARGE
    return int(text)


def _big_float(text: str) -> float | int:
    value = float(text)
    if math.isinf(value):
        return -TOO_LARGE if text.startswith("-") else TOO_LARGE
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _loads_big_numbers(raw: bytes) -> Any:
    """orjson refuses a number beyond a double (a 5,000-digit integer, ``1e400``): the standard
    library reads the event, such numbers as :data:`~ingest.numbers.TOO_LARGE`, which
    :mod:`ingest.numbers` then drops from the document with a tag. None if the event is not
    valid JSON either way."""
    try:
        return json.loads(raw, parse_int=_big_int, parse_float=_big_float, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _get(event: dict[str, Any], *path: str) -> Any:
    cur: Any = event
    for part in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


class Router:
    def __init__(self, config: RoutingConfig | None = None) -> None:
        self.config = config or RoutingConfig()
        self._field_path = tuple(self.config.field_route.split("."))
        self._routes = [(glob, kind) for glob, kind in self.config.path_routes]
        self._path_cache: dict[str, str | None] = {}
        self._max_bytes = self.config.max_event_bytes

    def kind_for_path(self, path: str | None) -> str | None:
        if not path:
            return None
        found = self._path_cache.get(path, "")
        if found == "":
            found = next((kind for glob, kind in self._routes if fnmatch.fnmatchcase(path, glob)), None)
            if len(self._path_cache) > PATH_CACHE_LIMIT:
                self._path_cache.clear()
            self._path_cache[path] = found
        return found

    def route(self, raw: bytes) -> Routed | DeadLetter:
        """The event decoded and routed, or a dead letter saying why not. Runs for every event: the
        common Filebeat 7.x/8.x shape (``log.file.path`` a string, ``log.offset`` an int) is read
        with a few lookups; anything else takes :meth:`_where`, which tries every shape."""
        if len(raw) > self._max_bytes:
            return DeadLetter(raw, "decode", "too_large",
                              f"event of {len(raw)} bytes is over the limit of {self.config.max_event_bytes}")
        try:
            event = _loads(raw)
        except orjson.JSONDecodeError as e:
            event = _loads_big_numbers(raw) if "number" in e.msg else None
            if event is None:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return DeadLetter(raw, "decode", "invalid_utf8", f"event is not valid UTF-8: {quote(raw)}")
                return DeadLetter(raw, "decode", "invalid_json",
                                  f"event is not valid JSON ({e.msg}): {quote(raw.decode())}")
        if type(event) is not dict:  # both decoders make plain dicts
            return DeadLetter(raw, "decode", "not_an_object", f"event is JSON but not an object: {quote(raw.decode())}")
        message = event.get("message")
        if type(message) is not str:
            code = "no_message" if message is None else "message_not_string"
            return DeadLetter(raw, "decode", code, f"event has no string `message` field: {quote(raw.decode())}")
        # Filebeat 7.x/8.x: log.file.path, log.offset, host.name; 6.x: source, offset, beat.hostname
        log = event.get("log")
        if type(log) is dict and type(file := log.get("file")) is dict and type(path := file.get("path")) is str \
                and type(offset := log.get("offset")) is int and 0 <= offset <= LONG_MAX:
            pass  # the common shape: what _where would find
        else:
            path, offset = _where(event)
        kind = self._kind(event, path)
        if path is None and is_journald(event):  # Filebeat's journald input: no header in the message
            kind = kind or journald_kind(event)
            if kind in HEADER_KINDS:
                message = header_line(event, message)
        if kind is None:
            return DeadLetter(raw, "route", "no_route",
                              f"no route for this event (path {quote(path)}, no {self.config.field_route}, no module)")
        host = event.get("host")
        if type(host) is dict:
            host = host.get("name")
        if type(host) is not str:
            host = _get(event, "agent", "hostname") or _get(event, "beat", "hostname")
            if not isinstance(host, str):
                host = None
        read_at = None
        ts = event.get("@timestamp")
        if type(ts) is str:
            try:
                read_at = parse_timestamp(ts)
            except ValueError:
                read_at = None
        return Routed(raw, kind, message, path, offset, host, read_at, event)

    def _kind(self, event: dict[str, Any], path: str | None) -> str | None:
        explicit: Any = event
        for part in self._field_path:
            explicit = explicit.get(part) if type(explicit) is dict else None
        if type(explicit) is str and explicit in KINDS:
            return explicit
        for holder in ("event", "fileset"):  # 7.x+ event.module, 6.x fileset.module
            found = event.get(holder)
            module = found.get("module") if type(found) is dict else None
            if module:
                if module == "auditd":
                    return "auditd"
                if module == "system" and found.get("dataset") == "system.auth":  # type: ignore[union-attr]
                    return "auth"  # the system module's auth fileset (from a file or the journal)
                break
        return self.kind_for_path(path)


def _where(event: dict[str, Any]) -> tuple[str | None, int | None]:
    """The file path and offset of any Filebeat shape: 7.x/8.x ``log.*`` first, else 6.x ``source``
    and ``offset``; an offset that is not an int between 0 and a long's maximum is none."""
    path: Any = None
    offset: Any = None
    log = event.get("log")
    if type(log) is dict:
        file = log.get("file")
        if type(file) is dict:
            path = file.get("path")
        offset = log.get("offset")
    if not isinstance(path, str):
        path = event.get("source")
        if not isinstance(path, str):
            path = None
    if not isinstance(offset, int):
        offset = event.get("offset")
        if not isinstance(offset, int):
            offset = None
    if offset is not None and not 0 <= offset <= LONG_MAX:  # log.offset is a long: see ingest.numbers
        offset = None
    return path, offset
