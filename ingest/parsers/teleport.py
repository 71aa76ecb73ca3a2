"""Teleport audit events (JSON lines from the auth server's log directory, ``lib/events``).

Every event is kept whole under ``teleport.*`` (dots in its keys become ``_``: ``addr.remote`` ->
``teleport.addr_remote``); ECS fields are copied from it (:mod:`ingest.parsers.teleport_ecs`), and
``event.category`` / ``event.type`` come from ``patterns/teleport.events.toml``
(:mod:`ingest.parsers.teleport_events`). Version-1 lines (``2016-04-25 22:37:29 +0000
UTC,session.start,{...}``) are read too. A line that is not a JSON object with an ``event``
string gets ``_grokparsefailure`` and the time it was read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ingest.document import add_tag, format_timestamp
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext, Parser, register
from ingest.parsers.teleport_ecs import add_ecs, outcome
from ingest.parsers.teleport_events import event_table

DATE_FAILURE_TAG = "_dateparsefailure"


def _decode(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """The event of a line, and the time of a version-1 line's prefix."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        brace = line.find(",{")
        if brace < 0 or not line[:4].isdigit():
            return None, None
        try:
            event = orjson.loads(line[brace + 1:])
        except orjson.JSONDecodeError:
            return None, None
        if isinstance(event, dict) and "event" not in event:
            head = line[:brace]
            event["event"] = head.rpartition(",")[2]
        return (event if isinstance(event, dict) else None), line[:brace].rpartition(",")[0]
    return (event if isinstance(event, dict) else None), None


@register
class TeleportParser(Parser):
    kind = "teleport"
    dataset = "teleport.audit"

    def __init__(self, resources: Any = None) -> None:
        super().__init__(resources)
        self.table = event_table(getattr(resources, "folders", None))

    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        doc = self.base_document(line)
        event, v1_time = _decode(line)
        if event is None or not isinstance(event.get("event"), str):
            add_tag(doc, PARSE_FAILURE_TAG)
            doc["@timestamp"] = format_timestamp(ctx.now)
            return doc
        name = event["event"]
        doc["teleport"] = {k.replace(".", "_"): v for k, v in event.items()}
        ev = doc["event"]
        ev["action"] = name
        doc["@timestamp"] = self._time(event.get("time", v1_time), ctx, doc)
        kind = self.table.get(name)
        if kind.category:
            ev["category"] = list(kind.category)
        types = kind.event_type(event.get("code"), event.get("action"))
        if types:
            ev["type"] = list(types)
        result = outcome(event, types)
        if result is not None:
            ev["outcome"] = result
        add_ecs(doc, event, name)
        return doc

    @staticmethod
    def _time(value: Any, ctx: LineContext, doc: dict[str, Any]) -> str:
        if isinstance(value, str):
            text = value[:-4] if value.endswith(" UTC") else value  # version 1: "... +0000 UTC"
            try:
                ts = datetime.fromisoformat(text)
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=ctx.tz)
                return format_timestamp(ts)  # ValueError if out of range
            except ValueError:
                add_tag(doc, DATE_FAILURE_TAG)
        return format_timestamp(ctx.now)
