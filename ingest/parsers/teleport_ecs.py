"""ECS fields of a Teleport audit event (the event itself stays whole under ``teleport.*``).

Field names are Teleport's (``api/proto/teleport/legacy/types/events/events.proto`` JSON tags):

- ``user`` -> ``user.name`` (the Teleport user); ``login`` -> ``user.target.name`` (the OS login);
  ``name`` of ``user.create/update/delete`` -> ``user.target.name``; ``identity.user`` of
  ``cert.create`` -> ``user.name``; ``user_roles`` / ``identity.roles`` / ``roles`` of
  ``user.*`` -> ``user.roles``; ``windows_user`` -> ``user.target.name``.
- ``addr.remote`` -> ``source.*``, ``addr.local`` -> ``destination.*``, ``server_addr`` ->
  ``host.ip`` (an IP only), ``addr`` of ``port`` and ``desktop_addr`` -> ``destination.*``;
  ``src_addr``/``dst_addr``/``dst_port`` of ``session.network`` -> ``source.ip``,
  ``destination.ip/port``. Only a valid IP goes into ``*.ip``; a host name goes into
  ``*.domain``; ``@local-node`` and other forms only into ``*.address``
  (:mod:`ingest.parsers.addresses`).
- ``server_hostname`` -> ``host.hostname``, ``server_id`` -> ``host.id``; ``code`` ->
  ``event.code``, ``uid`` -> ``event.id``, ``ei`` -> ``event.sequence``; ``error`` (else
  ``reason``) -> ``event.reason``; ``user_agent`` -> ``user_agent.original``.
- ``command`` (exec, scp) or ``initial_command`` (session.start) -> ``process.command_line``,
  ``exitCode`` -> ``process.exit_code``; ``session.command``: ``pid``, ``ppid``, ``program``,
  ``path``, ``argv`` -> ``process.*``; ``session.disk``: ``path`` -> ``file.path``.
"""

from __future__ import annotations

from typing import Any

from ingest.document import add_related
from ingest.parsers.addresses import endpoint, valid_ip

#: event.type values of an event that did something: without ``success`` or a failure code they
#: mean it worked (a start, a creation...), so the event gets ``event.outcome: success``
_DONE_TYPES = frozenset({"start", "creation", "deletion", "change", "access"})
_USER_TARGET_EVENTS = frozenset({"user.create", "user.update", "user.delete"})


def outcome(event: dict[str, Any], types: tuple[str, ...]) -> str | None:
    """``success`` when the event says so, else ``failure`` for a code ending W or E (Teleport's
    warning/error variants: T1000W a failed login, T3002E a failed exec), else ``success`` for an
    event that did something (``_DONE_TYPES``), else None."""
    success = event.get("success")
    if isinstance(success, bool):
        return "success" if success else "failure"
    code = event.get("code")
    if isinstance(code, str) and code[-1:] in ("W", "E"):
        return "failure"
    if _DONE_TYPES.intersection(types):
        return "success"
    return None


def _text(event: dict[str, Any], key: str) -> str | None:
    value = event.get(key)
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _side(doc: dict[str, Any], holder: str, value: Any) -> None:
    side = endpoint(value)
    if side is None:
        return
    doc[holder] = side
    if "ip" in side:
        add_related(doc, "ip", side["ip"])
    elif "domain" in side:
        add_related(doc, "hosts", side["domain"])


def add_ecs(doc: dict[str, Any], event: dict[str, Any], name: str) -> None:
    ev = doc["event"]
    for key, ecs_key in (("code", "code"), ("uid", "id")):
        value = _text(event, key)
        if value is not None:
            ev[ecs_key] = value
    if isinstance(event.get("ei"), int) and not isinstance(event["ei"], bool):
        ev["sequence"] = event["ei"]
    reason = _text(event, "error") or _text(event, "reason")
    if reason is not None:
        ev["reason"] = reason

    user: dict[str, Any] = {}
    found = event.get("identity")
    identity: dict[str, Any] = found if isinstance(found, dict) else {}
    name_value = _text(event, "user") or _text(identity, "user")
    if name_value is not None:
        user["name"] = name_value
    target = _text(event, "login") or _text(event, "windows_user")
    if name in _USER_TARGET_EVENTS:
        target = _text(event, "name") or target
    if target is not None:
        user["target"] = {"name": target}
    roles = _strings(event.get("user_roles")) or _strings(identity.get("roles"))
    if roles is None and name.startswith("user."):
        roles = _strings(event.get("roles"))
    if roles is not None:
        user["roles"] = roles
    if user:
        doc["user"] = user
        for who in (user.get("name"), user.get("target", {}).get("name")):
            add_related(doc, "user", who)

    _side(doc, "source", event.get("addr.remote"))
    _side(doc, "destination", event.get("addr.local"))
    if name == "port":
        _side(doc, "destination", event.get("addr"))
    elif name.startswith("windows.desktop."):
        _side(doc, "destination", event.get("desktop_addr"))
    elif name == "session.network":
        _network(doc, event)

    host: dict[str, Any] = {}
    for key, target_key in (("server_hostname", "hostname"), ("server_id", "id")):
        text = _text(event, key)
        if text is not None:
            host[target_key] = text
    server = endpoint(event.get("server_addr"))
    if server is not None and "ip" in server:
        host["ip"] = server["ip"]
    if host:
        doc["host"] = host

    _process(doc, event, name)
    agent = _text(event, "user_agent")
    if agent is not None:
        doc["user_agent"] = {"original": agent}


def _network(doc: dict[str, Any], event: dict[str, Any]) -> None:
    """session.network (enhanced recording): the node's connection, not the user's."""
    src = valid_ip(event["src_addr"]) if isinstance(event.get("src_addr"), str) else None
    if src is not None:
        doc["source"] = {"address": event["src_addr"], "ip": src}
    dst = valid_ip(event["dst_addr"]) if isinstance(event.get("dst_addr"), str) else None
    if dst is not None:
        side: dict[str, Any] = {"address": event["dst_addr"], "ip": dst}
        port = event.get("dst_port")
        if isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535:
            side["port"] = port
        doc["destination"] = side
        add_related(doc, "ip", dst)


def _process(doc: dict[str, Any], event: dict[str, Any], name: str) -> None:
    process: dict[str, Any] = {}
    command = _text(event, "command")
    initial = _strings(event.get("initial_command"))
    if command is not None:
        process["command_line"] = command
    elif initial is not None:
        process["command_line"] = " ".join(initial)
    code = event.get("exitCode")
    if isinstance(code, int) and not isinstance(code, bool):
        process["exit_code"] = code
    elif isinstance(code, str) and code.lstrip("-").isdigit() and len(code) < 12:
        process["exit_code"] = int(code)
    if name == "session.command":
        for key, target in (("pid", "pid"), ("ppid", "ppid")):
            value = event.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                process[target] = value
        program = _text(event, "program")
        if program is not None:
            process["name"] = program
        path = _text(event, "path")
        if path is not None:
            process["executable"] = path
        argv = _strings(event.get("argv")) or []
        if program is not None or argv:
            process["args"] = [program or path or "", *argv]
            process["args_count"] = len(process["args"])
    elif name == "session.disk":
        path = _text(event, "path")
        if path is not None:
            doc["file"] = {"path": path}
    if process:
        doc["process"] = process
