"""Parsers driven by rule files: auth, commands, openvpn and shell.

Each line: split the header once with the first of the kind's header forms that matches
(timestamp, host, program, pid...), then try only the rules of that program on the rest of the line
(or on the ``[@metadata][body]`` the header names, e.g. the text of rsyslog's ``message repeated N
times: [...]``), first match wins, then add the kind's derived fields.

Time: a header's ``[@metadata][timestamp]`` becomes ``@timestamp``; a timestamp that cannot be
read, and a line no header form matches, get ``_dateparsefailure`` and the time the line was read; a
header form without a timestamp (OpenVPN's ``--suppress-timestamps``, RFC 5424's ``-``) takes the
read time without a tag: there was no time to read.
"""

from __future__ import annotations

from datetime import UTC
from ipaddress import IPv6Address
from typing import Any, ClassVar

from ingest.document import add_tag, format_timestamp, related_writer
from ingest.parsers import syslog_fields
from ingest.parsers.base import PARSE_FAILURE_TAG, LineContext, Parser, register
from ingest.parsers.resources import ParserResources

DATE_FAILURE_TAG = "_dateparsefailure"


class RulesParser(Parser):
    """A parser whose knowledge is ``patterns/<kind>.rules.toml``."""

    #: fields whose values also go to ``related.user`` / ``related.ip``
    related_users: ClassVar[tuple[tuple[str, ...], ...]] = (("user", "name"),)
    related_ips: ClassVar[tuple[tuple[str, ...], ...]] = (("source", "ip"),)

    def __init__(self, resources: ParserResources) -> None:
        self.resources = resources
        # every document starts as base_document makes it (whatever the line): the writers may rely on that
        self.rules = resources.rules(self.kind, base=tuple(_paths(self.base_document(""))))
        self.clock = resources.clock
        #: per header form: its search, its writer, and whether it can name the body
        self._headers = [(h.search, write, any(f[1] == ("@metadata", "body") for f in h.fields))
                         for h, write in zip(self.rules.headers, self.rules.header_writers, strict=True)]
        self._unwraps = self.rules.unwrap
        self._related = related_writer({"user": self.related_users, "ip": self.related_ips,
                                        "hosts": (("host", "hostname"),)})

    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        doc = self.base_document(line)
        split = self._split(line, doc)
        if split is None:
            add_tag(doc, PARSE_FAILURE_TAG)
            add_tag(doc, DATE_FAILURE_TAG)  # no header form: no time could be read either
            doc["@timestamp"] = format_timestamp(ctx.now)
            return doc
        found = self._match(split[0], split[1])
        if found is None:
            add_tag(doc, PARSE_FAILURE_TAG)
        else:
            found[0].write(found[1], doc)
        meta = doc.pop("@metadata", None)
        self._timestamp(doc, meta, ctx)
        if "log" in doc or (meta is not None and "structured_data" in meta):
            syslog_fields.complete(doc.setdefault("log", {}), meta.get("structured_data") if meta else None)
        self.finish(doc, ctx)
        return doc

    def rule_for(self, line: str, *, prefilter: bool = True) -> str | None:
        """The name of the rule that gives ``line`` its document (None: no header form or no rule
        matches); ``prefilter=False`` runs every candidate's regex, ignoring literal pre-checks."""
        split = self._split(line, {})
        found = self._match(*split, prefilter=prefilter) if split is not None else None
        return found[0].name if found is not None else None

    def _split(self, line: str, doc: dict[str, Any]) -> tuple[str, str | None] | None:
        """The header's fields into ``doc``; the text the rules get and the program (None: no header
        form matches). A byte-order mark before the line and the end of a CRLF line (or trailing
        blanks a relay added) are not part of the message's text (``message`` keeps them)."""
        if line and (line[-1] <= " " or line[0] == "\ufeff"):
            line = line.lstrip("\ufeff").rstrip()
        body = line
        program: str | None = None
        headers = self._headers
        if headers:
            for search, apply, names_body in headers:  # noqa: B007 (the matching form is used after the loop)
                m = search(line)
                if m is not None:
                    break
            else:
                return None
            apply(m, doc)
            named: str | None = None
            if names_body:
                meta = doc.get("@metadata")
                if meta is not None:
                    named = meta.pop("body", None)
            body = named if named is not None else line[m.end():]
            process = doc.get("process")
            if process is not None:
                program = process.get("name")
        if self._unwraps:
            body = self._unwrap(body, doc)
        return body, program

    def _match(self, body: str, program: str | None, prefilter: bool = True) -> tuple[Any, Any] | None:
        """The first rule of ``program`` that matches ``body``, and its match."""
        if not prefilter:
            for rule in self.rules.candidates(program):
                m = rule.grok.search(body)
                if m is not None:
                    return rule, m
            return None
        for rule in self.rules.candidates_for(program, body):
            prefix = rule.prefix
            if prefix and not body.startswith(prefix):
                continue
            required = rule.required
            if required and required not in body:
                continue
            m = rule.grok.search(body)
            if m is not None:
                return rule, m
        return None

    def _unwrap(self, body: str, doc: dict[str, Any]) -> str:
        """The first ``unwrap`` form that matches the message adds its fields and may name a new body."""
        for start, form in self._unwraps:
            if start and not body.startswith(start):
                continue
            m = form.search(body)
            if m is not None:
                form.apply(m, doc)
                meta = doc.get("@metadata")
                if meta is not None and "body" in meta:
                    return str(meta.pop("body"))
                break
        return body

    def _timestamp(self, doc: dict[str, Any], meta: dict[str, Any] | None, ctx: LineContext) -> None:
        text = meta.get("timestamp") if meta else None
        parsed = None
        if text:
            resources = self.resources
            if resources.host_timezones:
                tz = resources.zone_for(doc, ctx)
            else:  # zone_for without per-host zones, inline (every line comes here)
                tz = ctx.tz if ctx.tz is not UTC else resources.timezone
            parsed = self.clock.parse(text, ctx.now, tz)
        if parsed is None:
            doc["@timestamp"] = format_timestamp(ctx.now)
            if text:
                add_tag(doc, DATE_FAILURE_TAG)
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
        system = doc.get("system")
        if system is not None:
            auth = system.get("auth")
            ssh = auth.get("ssh") if auth is not None else None
            if ssh is not None:
                _ssh_fields(doc, ssh)
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
        self._related(doc)  # RulesParser.finish


def _ssh_fields(doc: dict[str, Any], ssh: dict[str, Any]) -> None:
    """A key fingerprint without ``MD5:``; a dropped address checked and, without another, the source."""
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


def _paths(doc: dict[str, Any], above: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The field paths of ``doc`` (an object's own path too)."""
    out: list[tuple[str, ...]] = []
    for key, value in doc.items():
        out.append((*above, key))
        if type(value) is dict:
            out.extend(_paths(value, (*above, key)))
    return out


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
