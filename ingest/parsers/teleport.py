"""Teleport audit events (JSON lines from the auth server's log directory, seed 001).

``session.start`` / ``session.end`` / ``session.leave`` / ``session.join`` / ``auth`` are mapped to
the same ECS fields as the other kinds; any other event is kept as-is under ``teleport.*``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ingest.document import add_related, add_tag, format_timestamp
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext, Parser, register

_ACTIONS = {
    "session.start": ("session", "start", "success"),
    "session.join": ("session", "start", "success"),
    "session.end": ("session", "end", None),
    "session.leave": ("session", "end", None),
}


def _split_addr(value: str) -> tuple[str, int | None]:
    """``81.2.69.160:53412`` / ``[2001:db8::1]:22`` / ``10.0.5.1`` -> (ip, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port) if port.isdigit() else None
    return value, None


@register
class TeleportParser(Parser):
    kind = "teleport"
    dataset = "teleport.audit"

    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        doc = self.base_document(line)
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            add_tag(doc, PARSE_FAILURE_TAG)
            doc["@timestamp"] = format_timestamp(ctx.now)
            return doc
        name = event["event"]
        doc["teleport"] = {k.replace(".", "_"): v for k, v in event.items()}
        doc["event"]["action"] = name
        doc["@timestamp"] = self._time(event.get("time"), ctx, doc)
        user = event.get("user")
        if isinstance(user, str) and user:
            doc["user"] = {"name": user}
            add_related(doc, "user", user)
        login = event.get("login")
        if isinstance(login, str) and login:
            doc.setdefault("user", {})["target"] = {"name": login}
            add_related(doc, "user", login)
        remote = event.get("addr.remote")
        if isinstance(remote, str) and remote:
            ip, port = _split_addr(remote)
            doc["source"] = {"ip": ip} if port is None else {"ip": ip, "port": port}
            add_related(doc, "ip", ip)
        local = event.get("addr.local")
        if isinstance(local, str) and local:
            ip, port = _split_addr(local)
            doc["destination"] = {"ip": ip} if port is None else {"ip": ip, "port": port}
        if name in _ACTIONS:
            category, type_, outcome = _ACTIONS[name]
            doc["event"]["category"] = [category]
            doc["event"]["type"] = [type_]
            if outcome:
                doc["event"]["outcome"] = outcome
        elif name == "auth" or name.startswith("user.login"):
            doc["event"]["category"] = ["authentication"]
            doc["event"]["type"] = ["info"]
            success = event.get("success")
            if isinstance(success, bool):
                doc["event"]["outcome"] = "success" if success else "failure"
            if isinstance(event.get("error"), str):
                doc["event"]["reason"] = event["error"]
        return doc

    @staticmethod
    def _time(value: Any, ctx: LineContext, doc: dict[str, Any]) -> str:
        if isinstance(value, str):
            try:
                ts = datetime.fromisoformat(value)
            except ValueError:
                add_tag(doc, "_dateparsefailure")
            else:
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=ctx.tz)
                return format_timestamp(ts)
        return format_timestamp(ctx.now)
