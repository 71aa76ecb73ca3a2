"""The ``log.syslog.*`` fields a header gives, completed as ECS has them.

A header writes what the line carries: ``<PRI>`` (``log.syslog.priority``), busybox's and OpenWrt's
``auth.info`` (``log.syslog.facility.name`` / ``log.syslog.severity.name``), RFC 5424's structured
data (as text). This fills in the rest: priority = facility * 8 + severity, the codes of written
names and the names of codes (RFC 5424 / rsyslog keywords: ``auth``, ``local7``, ``err``,
``warning``...), and the structured data as an object ``{SD-ID: {PARAM: value}}``.
"""

from __future__ import annotations

import re
from typing import Any

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
              "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_FACILITY_CODES = {name: code for code, name in enumerate(FACILITIES)} | {"security": 4}
_SEVERITY_CODES = {name: code for code, name in enumerate(SEVERITIES)} | {"panic": 0, "error": 3, "warn": 4}

_SD_ELEMENT = re.compile(r'\[([^\s\]=]+)((?:\s+[^\s\]=]+="(?:[^"\\]|\\.)*")*)\s*\]')
_SD_PARAM = re.compile(r'([^\s\]=]+)="((?:[^"\\]|\\.)*)"')
_SD_UNESCAPE = re.compile(r'\\(["\\\]])')


def complete(log: dict[str, Any], structured_data: str | None = None) -> None:
    """Fill ``log.syslog`` from what the header captured (nothing happens without ``log.syslog``)."""
    syslog = log.get("syslog")
    if type(syslog) is not dict:
        if structured_data is None:
            return
        syslog = log["syslog"] = {}
    if structured_data is not None:
        parsed = parse_structured_data(structured_data)
        if parsed:
            syslog["structured_data"] = parsed
    priority = syslog.get("priority")
    facility = syslog.get("facility")
    severity = syslog.get("severity")
    if type(priority) is int:
        if 0 <= priority < 8 * len(FACILITIES):
            code, level = divmod(priority, 8)
            syslog["facility"] = {"code": code, "name": FACILITIES[code]}
            syslog["severity"] = {"code": level, "name": SEVERITIES[level]}
        return
    if type(facility) is dict and type(severity) is dict:
        fcode = _FACILITY_CODES.get(facility.get("name", ""))
        scode = _SEVERITY_CODES.get(severity.get("name", ""))
        if fcode is not None and scode is not None:
            syslog["facility"] = {"code": fcode, "name": FACILITIES[fcode]}
            syslog["severity"] = {"code": scode, "name": SEVERITIES[scode]}
            syslog["priority"] = fcode * 8 + scode


def parse_structured_data(text: str) -> dict[str, dict[str, str]]:
    """``[exampleSDID@32473 iut="3" eventSource="App"][meta seq="1"]`` to ``{id: {param: value}}``."""
    out: dict[str, dict[str, str]] = {}
    for element in _SD_ELEMENT.finditer(text):
        params = out.setdefault(element.group(1), {})
        for param in _SD_PARAM.finditer(element.group(2)):
            params[param.group(1)] = _SD_UNESCAPE.sub(r"\1", param.group(2))
    return out
