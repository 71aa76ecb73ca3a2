"""ECS fields of an auditd document, from its ``auditd.log`` text values (copies: ``auditd.log``
keeps them). The names follow Filebeat's auditd module (7.4 conventions: ``user.id`` is ``uid``,
``user.name`` is ``acct``):

``process.pid ppid`` (int), ``process.name`` (comm), ``process.executable`` (exe),
``process.working_directory`` (cwd), ``process.title`` (proctitle, NULs as spaces),
``process.args`` + ``process.args_count`` (PROCTITLE arguments, EXECVE arguments, or USER_CMD's
``cmd`` split on white space as Filebeat does), ``process.command_line`` (EXECVE args joined,
USER_CMD ``cmd``), ``user.id`` (uid), ``user.audit.id`` (auid), ``user.effective.id`` (euid),
``user.saved.id`` (suid), ``user.filesystem.id`` (fsuid), ``user.group.id`` (gid),
``user.effective.group.id``, ``user.saved.group.id``, ``user.filesystem.group.id``: ids are strings
(ECS keyword). ``user.name`` (acct, else the enriched ``UID``), ``user.terminal`` (terminal),
``user.audit.name`` / ``user.effective.name`` / ``user.group.name`` (enriched
``AUID``/``EUID``/``GID``), ``user.target.id`` (``id`` of ADD_USER/DEL_USER/USER_MGMT),
``group.id`` (``id`` of ADD_GROUP/DEL_GROUP/GRP_MGMT), ``host.architecture`` (arch, ``c000003e`` ->
``x86_64``...), ``source.address`` + ``source.ip`` (``addr``, else ``src``; ``source.ip`` only for
an IP address), ``destination.address`` + ``destination.ip`` (``dst``), ``related.ip``,
``related.user``, ``event.outcome`` ``success``/``failure`` from ``res`` (``success``, ``yes``,
``1`` / ``failed``, ``fail``, ``no``, ``0``) or else from ``success=yes/no`` (Filebeat 7.4 copies
``res`` verbatim: ``"1"``).
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address
from typing import Any

from ingest.document import add_related

#: The id auditd writes for "not set" ((uid_t)-1; older kernels write -1): kept as written, as
#: Filebeat does, and flagged (``auditd.log.<key>_unset: true``).
UNSET_VALUES = frozenset({"4294967295", "-1"})

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
#: (uid key, gid key, user.<holder>) of the ids besides uid / gid
_OTHER_IDS = (("euid", "egid", "effective"), ("suid", "sgid", "saved"), ("fsuid", "fsgid", "filesystem"))
_OTHER_ID_KEYS = frozenset(key for ids in _OTHER_IDS for key in ids[:2])
#: (enriched key, user.<holder>) of the names the enriched format adds
_ENRICHED_NAMES = (("AUID", "audit"), ("EUID", "effective"), ("GID", "group"))
_ENRICHED_NAME_KEYS = frozenset(key for key, _ in _ENRICHED_NAMES)
_USER_ID_RECORDS = frozenset({"ADD_USER", "DEL_USER", "USER_MGMT"})
_GROUP_ID_RECORDS = frozenset({"ADD_GROUP", "DEL_GROUP", "GRP_MGMT"})


@lru_cache(maxsize=4096)
def _ip(value: str) -> str | None:
    """``value`` normalised if it is an IP address, else None."""
    try:
        return str(ip_address(value))
    except ValueError:
        return None


def _execve_process(process: dict[str, Any], args: list[str]) -> None:
    process["args"] = args
    process["args_count"] = len(args)
    process["command_line"] = " ".join(args)


def add_ecs(doc: dict[str, Any], log: dict[str, Any], rtype: str, args: list[str] | None) -> None:
    """ECS fields of ``doc`` from ``log`` (first value of a repeated key); ``args``: EXECVE's arguments."""
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
    if args:
        _execve_process(process, args)
    elif rtype == "PROCTITLE":
        value = get("proctitle")
        if value is not None:
            parts = value.split("\x00")
            while parts and not parts[-1]:
                parts.pop()
            process["title"] = " ".join(parts)
            process["args"] = parts
            process["args_count"] = len(parts)
    elif rtype == "USER_CMD":
        value = get("cmd")
        if value is not None:
            process["command_line"] = value
            parts = value.split()
            process["args"] = parts
            process["args_count"] = len(parts)
    if process:
        doc["process"] = process

    user: dict[str, Any] = {}
    value = get("uid")
    if value is not None:
        user["id"] = value
    value = get("gid")
    if value is not None:
        user["group"] = {"id": value}
    if not _OTHER_ID_KEYS.isdisjoint(log):  # a user-space record has none of them
        for uid_key, gid_key, holder in _OTHER_IDS:
            uid = get(uid_key)
            gid = get(gid_key)
            if uid is not None or gid is not None:
                part: dict[str, Any] = {}
                if uid is not None:
                    part["id"] = uid
                if gid is not None:
                    part["group"] = {"id": gid}
                user[holder] = part
    value = get("auid")
    if value is not None:
        user["audit"] = {"id": value}
    value = get("acct") or get("UID")
    if value is not None:
        user["name"] = value
        add_related(doc, "user", value)
    value = get("terminal")
    if value is not None:
        user["terminal"] = value
    if not _ENRICHED_NAME_KEYS.isdisjoint(log):  # enriched format
        for key, holder in _ENRICHED_NAMES:
            value = get(key)
            if value is not None:
                user.setdefault(holder, {})["name"] = value
    value = get("id")
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
