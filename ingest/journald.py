"""Filebeat's journald input: its events carry the message without a syslog header.

A host without rsyslog (Debian 12+, Fedora, minimal images) has no auth.log; Filebeat reads the
journal instead (``type: journald``, or the system module with ``var.use_journald``). Such an event
holds the bare message plus the journal's fields: ``syslog.identifier`` (SYSLOG_IDENTIFIER),
``syslog.pid`` / ``process.pid`` (SYSLOG_PID / _PID), ``syslog.facility`` (SYSLOG_FACILITY),
``host.hostname`` (_HOSTNAME), and ``@timestamp`` is the entry's own time (__REALTIME_TIMESTAMP).

:func:`header_line` writes the line rsyslog would have written from those fields (RFC 3339 time,
host, ``identifier[pid]: message``), so every rule file and header form applies unchanged and the
document is the one the same entry read from auth.log gives (its time to the microsecond).
:func:`kind_of` routes it when the input names no kind: by identifier, else by facility.
"""

from __future__ import annotations

from typing import Any

#: SYSLOG_FACILITY numbers of auth (4) and authpriv (10): what rsyslog writes to auth.log / secure
AUTH_FACILITIES = frozenset({4, 10})
#: programs whose lines belong to auth.log even when the journal entry has no facility
AUTH_IDENTIFIERS = frozenset({
    "sshd", "sshd-session", "sshd-auth", "sudo", "sudoedit", "su", "login", "passwd", "chpasswd", "chage",
    "useradd", "userdel", "usermod", "groupadd", "groupdel", "groupmod", "gpasswd", "newgrp", "chsh", "chfn",
    "systemd-logind", "polkitd", "pkexec", "unix_chkpwd", "CRON", "crond", "runuser", "sssd", "vipw",
})


def is_journald(event: dict[str, Any]) -> bool:
    """True for an event of Filebeat's journald input (``input.type``, or its ``journald`` object)."""
    source = event.get("input")
    if type(source) is dict and source.get("type") == "journald":
        return True
    return type(event.get("journald")) is dict


def _field(event: dict[str, Any], parent: str, key: str) -> Any:
    holder = event.get(parent)
    return holder.get(key) if type(holder) is dict else None


def identifier(event: dict[str, Any]) -> str | None:
    ident = _field(event, "syslog", "identifier") or _field(event, "process", "name")
    return ident if isinstance(ident, str) and ident and " " not in ident else None


def kind_of(event: dict[str, Any]) -> str | None:
    """auth for the auth programs and the auth/authpriv facilities, openvpn for OpenVPN; else None."""
    ident = identifier(event)
    if ident is not None:
        if ident in AUTH_IDENTIFIERS:
            return "auth"
        if ident.startswith("openvpn") or ident.startswith("ovpn"):
            return "openvpn"
    facility = _field(event, "syslog", "facility")
    if isinstance(facility, str) and facility.isdigit():
        facility = int(facility)
    return "auth" if facility in AUTH_FACILITIES else None


def header_line(event: dict[str, Any], message: str) -> str:
    """``message`` behind the syslog header rsyslog would write for this entry (see the module doc).

    Without a time the header starts at the host (the line then says it has no readable time);
    without an identifier the message follows the host.
    """
    ts = event.get("@timestamp")
    host = _field(event, "host", "hostname") or _field(event, "host", "name")
    ident = identifier(event)
    pid = _field(event, "syslog", "pid") or _field(event, "process", "pid")
    parts = []
    if isinstance(ts, str) and ts:
        parts.append(ts)
    if isinstance(host, str) and host and " " not in host:
        parts.append(host)
    if ident is not None:
        if isinstance(pid, int) or (isinstance(pid, str) and pid.isdigit()):
            parts.append(f"{ident}[{pid}]:")
        else:
            parts.append(f"{ident}:")
    parts.append(message)
    return " ".join(parts)
