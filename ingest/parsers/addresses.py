"""``host:port`` strings as programs write them -> ECS ``*.ip`` / ``*.domain`` / ``*.address`` / ``*.port``.

Only a valid IP address goes into an ``ip`` field (Elasticsearch rejects the whole document
otherwise); a host name goes to ``domain``; anything else (``@local-node``, a socket path) stays in
``address`` only. ``address`` always holds the host part as written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from ipaddress import ip_address
from typing import Any

# RFC 1123 labels (underscores allowed, as real DNS has them), at most 253 characters
_DOMAIN_RE = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                        r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")


@lru_cache(maxsize=8192)
def valid_ip(value: str) -> str | None:
    """``value`` as Elasticsearch's ``ip`` type takes it (normalised, zone id dropped), or None."""
    try:
        return str(ip_address(value.split("%", 1)[0] if "%" in value else value))
    except ValueError:
        return None


def is_domain(value: str) -> bool:
    """A host name (not an IP address, which :func:`valid_ip` takes)."""
    return bool(_DOMAIN_RE.fullmatch(value)) and not value.replace(".", "").isdigit()


def split_host_port(value: str) -> tuple[str, int | None]:
    """``81.2.69.160:53412`` / ``[2001:db8::1]:22`` / ``node-1:3022`` / ``10.0.5.1`` / ``::1`` -> (host, port)."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            return value, None
        port = rest[1:] if rest.startswith(":") else ""
        return host, _port(port)
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        number = _port(port)
        return (host, number) if number is not None else (value, None)
    return value, None


def _port(text: str) -> int | None:
    if text.isdigit() and len(text) <= 5:
        number = int(text)
        if number <= 65535:
            return number
    return None


def endpoint(value: Any) -> dict[str, Any] | None:
    """The ECS fields of one end of a connection written as ``value`` (None for nothing usable)."""
    if not isinstance(value, str) or not value:
        return None
    host, port = split_host_port(value)
    if not host:
        return None
    side: dict[str, Any] = {"address": host}
    ip = valid_ip(host)
    if ip is not None:
        side["ip"] = ip
    elif is_domain(host):
        side["domain"] = host
    if port is not None:
        side["port"] = port
    return side
