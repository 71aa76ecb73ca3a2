"""Parsers driven by rule files: auth, commands, openvpn and shell.

Each line: split the syslog header once (timestamp, host, program, pid), then try only the rules
of that program on the rest of the line (first match wins), then add the kind's derived fields.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any, ClassVar

from ingest.document import add_tag, format_timestamp, related_writer
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext, Parser, register
from ingest.parsers.resources import ParserResources


class RulesParser(Parser):
    """A parser whose knowledge is ``patterns/<kind>.rules.toml``."""

    #: fields whose values also go to ``related.user`` / ``related.ip``
    related_users: ClassVar[tuple[tuple[str, ...], ...]] = (("user", "name"),)
    related_ips: ClassVar[tuple[tuple[str, ...], ...]] = (("source", "ip"),)

    def __init__(self, resources: ParserResources) -> None:
        self.resources = resources
        self.rules = resources.rules(self.kind)
        self.clock = resources.clock
        self._related = related_writer({"user": self.related_users, "ip": self.related_ips,
                                        "hosts": (("host", "hostname"),)})

    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        doc = self.base_document(line)
        body = line
        program: str | None = None
        header = self.rules.header
        if header is not None:
            m = header.search(line)
            if m is None:
                add_tag(doc, PARSE_FAILURE_TAG)
                doc["@timestamp"] = format_timestamp(ctx.now)
                return doc
            header.apply(m, doc)
            body = line[m.end():]
            program = doc["process"]["name"]
        for rule in self.rules.candidates(program):
            if rule.prefix and not body.startswith(rule.prefix):
                continue
            m = rule.grok.search(body)
            if m is None:
                continue
            rule.write(m, doc)
            break
        else:
            add_tag(doc, PARSE_FAILURE_TAG)
        self._timestamp(doc, ctx)
        self.finish(doc, ctx)
        return doc

    def _timestamp(self, doc: dict[str, Any], ctx: LineContext) -> None:
        meta = doc.pop("@metadata", None)
        text = meta.get("timestamp") if meta else None
        parsed = self.clock.parse(text, ctx.now, self.resources.zone_for(doc, ctx)) if text else None
        if parsed is None:
            doc["@timestamp"] = format_timestamp(ctx.now)
            if text:
                add_tag(doc, "_dateparsefailure")
        else:
            doc["@timestamp"] = parsed[1]

    def finish(self, doc: dict[str, Any], ctx: LineContext) -> None:
        """Derived fields common to every kind: ``related.user``, ``related.ip``, ``related.hosts``."""
        self._related(doc)


@register
class AuthParser(RulesParser):
    """``/var/log/auth.log`` and ``/var/log/secure`` (Filebeat's system/auth fields)."""

    kind = "auth"
    dataset = "system.auth"
    related_users = (("user", "name"), ("user", "target", "name"), ("system", "auth", "sudo", "user"),
                     ("system", "auth", "pam", "by_user"))
    related_ips = (("source", "ip"), ("system", "auth", "ssh", "dropped_ip"))

    def finish(self, doc: dict[str, Any], ctx: LineContext) -> None:
        ssh = doc.get("system", {}).get("auth", {}).get("ssh")
        if ssh is not None:
            key = ssh.get("key")
            if key is not None and "fingerprint" in key:
                fp = key["fingerprint"]
                if fp.startswith("MD5:"):
                    key["fingerprint"] = fp[4:]
            dropped = ssh.get("dropped_ip")
            if dropped is not None:
                if ":" in dropped:
                    address = checked_ipv6(dropped)
                    if address is None:
                        del ssh["dropped_ip"]
                    else:
                        ssh["dropped_ip"] = address
                doc.setdefault("source", {}).setdefault("ip", dropped)
        for end in ("source", "destination"):
            holder = doc.get(end)
            if type(holder) is dict:
                ip = holder.get("ip")
                if ip is not None and ":" in ip:
                    address = checked_ipv6(ip)
                    if address != ip:  # a zone id, or no address at all: keep the text, not as an ip
                        holder["address"] = ip
                        if address is None:
                            del holder["ip"]
                        else:
                            holder["ip"] = address
        super().finish(doc, ctx)


def checked_ipv6(text: str) -> str | None:
    """``text`` as Elasticsearch's ``ip`` type takes it: the address without a zone id
    (``fe80::1%eth0`` -> ``fe80::1``), or None when it is no IPv6 address at all.

    The rule files match IPv6 loosely (one short pattern instead of the eight-way grok IPV6); this is
    where a malformed one is caught, before Elasticsearch would reject the whole document.
    """
    address = text.partition("%")[0]
    try:
        IPv6Address(address)
    except ValueError:
        return None
    return address


@register
class CommandsParser(RulesParser):
    """Bash history logged through ``logger`` (seed 002's PROMPT_COMMAND), ``commands.log``."""

    kind = "commands"
    dataset = "bash.commands"


@register
class OpenVpnParser(RulesParser):
    """OpenVPN server log lines (connects, auth failures, disconnects, address assignment)."""

    kind = "openvpn"
    dataset = "openvpn.log"


@register
class ShellParser(RulesParser):
    """Per-user Python shell logs ``shell_<user>.log``; the user is taken from the file name."""

    kind = "shell"
    dataset = "python.shell"

    def finish(self, doc: dict[str, Any], ctx: LineContext) -> None:
        user = self.resources.shell_user(ctx.path)
        if user is not None:
            doc.setdefault("user", {})["name"] = user
        super().finish(doc, ctx)
