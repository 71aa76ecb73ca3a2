"""The baseline: seed 002's Logstash filter section, written plainly on pygrok.

What the Logstash config does for each event, in the same order, with the same JSON library as
our pipeline (orjson) for decode and encode:

* decode the Filebeat event (Logstash's ``codec => json``), add ``@version``;
* pick the branch as the ``if [source] == ...`` conditions do (the path is ``source`` in Filebeat
  6.x, ``log.file.path`` in 7.x/8.x): ``/var/log/audit/audit.log``, ``/var/log/commands.log``,
  ``"shell_" in source``, ``/var/log/auth.log``; OpenVPN (``"openvpn" in source``) with seed 003's
  two grok filters and its ``geoip`` filter on ``vpnhost`` (geoip2 City reader, no cache);
* in the branch's ``grok``, try the patterns in order with ``pygrok.Grok.match``; the first match
  wins (``break_on_match``); empty captures are dropped (``keep_empty_captures => false``); no
  match tags ``_grokparsefailure`` (and the grok's ``remove_field`` is not applied);
* ``mutate`` (``remove_field => message``, ``type``), the auth branch's ``date`` filter on
  ``[system][auth][timestamp]`` (year taken from the event's ``@timestamp``, as Logstash takes
  the current one);
* encode the bulk line: ``{"index": {"_index": "audit-YYYY.MM.DD"}}`` + the event (Logstash's
  elasticsearch output, ``index => "audit-%{+YYYY.MM.dd}"``).

pygrok only accepts ``\\w+`` capture names: field references (``[system][auth][user]``) and dotted
names are renamed to generated ones and mapped back when the document is built. The Grok objects
are compiled once (Logstash compiles at start). Seed 003's patterns lost their backslashes in the
article (``s+``, ``[%{USER:vpnuser}]``); they are restored here (``\\s+``, ``\\[...\\]``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pygrok  # type: ignore[import-untyped]

AUDITD = [
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): %{GREEDYDATA} pid=%{NUMBER:[auditd][log][pid]} res=%{WORD:[auditd][log][res]}(\')?",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): pid=%{NUMBER:[auditd][log][pid]} uid=%{NUMBER} old auid=%{NUMBER:[auditd][log][old_auid]} new auid=%{NUMBER:[auditd][log][new_auid]} old ses=%{NUMBER:[auditd][log][old_ses]} new ses=%{NUMBER:[auditd][log][new_ses]}",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): %{GREEDYDATA} acct=\"%{DATA:[auditd][log][acct]}\" %{GREEDYDATA} addr=%{IPORHOST:[auditd][log][addr]} %{GREEDYDATA} res=%{WORD:[auditd][log][res]}(\')?",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): (%{GREEDYDATA})?a0=\"%{DATA:[auditd][log][a0]}\"( %{GREEDYDATA})?",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): (%{GREEDYDATA})?a0=%{WORD:[auditd][log][a0]} %{GREEDYDATA} items=%{NUMBER:[auditd][log][items]} ppid=%{NUMBER:[auditd][log][ppid]} pid=%{NUMBER:[auditd][log][pid]} (%{GREEDYDATA})?comm=\"%{DATA:[auditd][log][comm]}\" %{GREEDYDATA} (%{GREEDYDATA})?key=\"%{DATA:[auditd][log][key]}\"",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): %{GREEDYDATA} acct=\"%{DATA:[auditd][log][acct]}\" %{GREEDYDATA} res=%{WORD:[auditd][log][res]}(\')?",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): %{GREEDYDATA} res=%{WORD:[auditd][log][res]}(\')?",
    r"type=%{WORD:[auditd][log][record_type]} msg=audit\(%{NUMBER}:%{NUMBER:[auditd][log][sequence]}\): (item=%{NUMBER:[auditd][log][item]} )?%{GREEDYDATA}",
]
COMMANDS = [
    r"%{SYSLOGTIMESTAMP:syslog_timestamp} %{HOSTNAME:syslog_hostname} %{DATA:user}: %{DATA:group} \[%{NUMBER:pid}\]:\s*%{NUMBER}\s*%{DATA:command}\s*\[%{NUMBER:command_exit_code}\]",
]
SHELL_MESSAGE = [r"%{GREEDYDATA}"]
SHELL_SOURCE = [r"%{GREEDYDATA}shell_%{DATA:user}.log"]
AUTH = [
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} sshd(?:\[%{POSINT:[system][auth][pid]}\])?: %{DATA:[system][auth][ssh][event]} %{DATA:[system][auth][ssh][method]} for (invalid user )?%{DATA:[system][auth][user]} from %{IPORHOST:[system][auth][ssh][ip]} port %{NUMBER:[system][auth][ssh][port]} ssh2(: %{GREEDYDATA:[system][auth][ssh][signature]})?",
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} sshd(?:\[%{POSINT:[system][auth][pid]}\])?: %{DATA:[system][auth][ssh][event]} user %{DATA:[system][auth][user]} from %{IPORHOST:[system][auth][ssh][ip]}",
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} sshd(?:\[%{POSINT:[system][auth][pid]}\])?: Did not receive identification string from %{IPORHOST:[system][auth][ssh][dropped_ip]}",
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} sudo(?:\[%{POSINT:[system][auth][pid]}\])?: \s*%{DATA:[system][auth][user]} :( %{DATA:[system][auth][sudo][error]} ;)? TTY=%{DATA:[system][auth][sudo][tty]} ; PWD=%{DATA:[system][auth][sudo][pwd]} ; USER=%{DATA:[system][auth][sudo][user]} ; COMMAND=%{GREEDYDATA:[system][auth][sudo][command]}",
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} groupadd(?:\[%{POSINT:[system][auth][pid]}\])?: new group: name=%{DATA:system.auth.groupadd.name}, GID=%{NUMBER:system.auth.groupadd.gid}",
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} useradd(?:\[%{POSINT:[system][auth][pid]}\])?: new user: name=%{DATA:[system][auth][user][add][name]}, UID=%{NUMBER:[system][auth][user][add][uid]}, GID=%{NUMBER:[system][auth][user][add][gid]}, home=%{DATA:[system][auth][user][add][home]}, shell=%{DATA:[system][auth][user][add][shell]}$",
    r"%{SYSLOGTIMESTAMP:[system][auth][timestamp]} %{SYSLOGHOST:[system][auth][hostname]} %{DATA:[system][auth][program]}(?:\[%{POSINT:[system][auth][pid]}\])?: %{GREEDYMULTILINE:[system][auth][message]}",
]
AUTH_CUSTOM = {"GREEDYMULTILINE": r"(.|\n)*"}
# Seed 003 (OpenVPN through syslog): two grok filters, then geoip on vpnhost.
OPENVPN_HEADER = [
    r"<(?<evtid>.*)>(?<datetime>(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:tember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\s+(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9]) (?:2[0123]|[01]?[0-9]):(?:[0-5][0-9]):(?:[0-5][0-9])) (?<prog>.*?): (?<msg>.*)",
]
OPENVPN_LOGIN = [
    r"%{IP:vpnhost}:%{POSINT:vpnport} \[%{USER:vpnuser}\] Peer Connection Initiated with \[AF_INET\](?<hostport>.*)",
]

_REF = re.compile(r"%\{(\w+):([^:}]+)\}")
_NAMED = re.compile(r"\(\?<([A-Za-z_]\w*)>")


class _Grok:
    """One compiled pygrok expression whose generated group names map back to field paths."""

    def __init__(self, expression: str, custom: dict[str, str] | None = None) -> None:
        self.fields: dict[str, tuple[str, ...]] = {}

        def rename(m: re.Match[str]) -> str:
            name = f"f{len(self.fields)}"
            ref = m.group(2)
            self.fields[name] = tuple(p for p in re.split(r"\]\[|\[|\]", ref) if p) if ref.startswith("[") else (ref,)
            return f"%{{{m.group(1)}:{name}}}"

        def rename_named(m: re.Match[str]) -> str:
            name = f"f{len(self.fields)}"
            self.fields[name] = (m.group(1),)
            return f"(?P<{name}>"

        translated = _NAMED.sub(rename_named, _REF.sub(rename, expression))
        self.grok = pygrok.Grok(translated, custom_patterns=custom or {})

    def apply(self, text: str, event: dict[str, Any]) -> bool:
        found = self.grok.match(text)
        if found is None:
            return False
        for name, value in found.items():
            if value is None or value == "":
                continue
            path = self.fields[name]
            cur = event
            for part in path[:-1]:
                nxt = cur.get(part)
                if not isinstance(nxt, dict):
                    nxt = cur[part] = {}
                cur = nxt
            cur[path[-1]] = value
        return True


def _grok(text: str, groks: list[_Grok], event: dict[str, Any]) -> bool:
    """Logstash's grok filter: the first pattern that matches wins; none tags the event."""
    for g in groks:
        if g.apply(text, event):
            return True
    tags = event.setdefault("tags", [])
    if "_grokparsefailure" not in tags:
        tags.append("_grokparsefailure")
    return False


class Baseline:
    """Seed 002's filter section (plus seed 003's OpenVPN grok and geoip) on pygrok."""

    def __init__(self, city_database: Path | None = None) -> None:
        self.auditd = [_Grok(p) for p in AUDITD]
        self.commands = [_Grok(p) for p in COMMANDS]
        self.shell_message = [_Grok(p) for p in SHELL_MESSAGE]
        self.shell_source = [_Grok(p) for p in SHELL_SOURCE]
        self.auth = [_Grok(p, AUTH_CUSTOM) for p in AUTH]
        self.openvpn_header = [_Grok(p) for p in OPENVPN_HEADER]
        self.openvpn_login = [_Grok(p) for p in OPENVPN_LOGIN]
        self.city = None
        if city_database is not None:
            import geoip2.database

            self.city = geoip2.database.Reader(str(city_database))

    def filter(self, event: dict[str, Any]) -> dict[str, Any]:
        source = event.get("source")
        if not isinstance(source, str):
            log = event.get("log")
            source = log.get("file", {}).get("path") if isinstance(log, dict) else None
        message = event.get("message", "")
        if source == "/var/log/audit/audit.log":
            _grok(message, self.auditd, event)
            event.pop("message", None)
            event["type"] = "auditd"
        if source == "/var/log/commands.log":
            _grok(message, self.commands, event)
            event.pop("message", None)
            event["type"] = "commands"
        if source is not None and "shell_" in source:
            _grok(message, self.shell_message, event)
            _grok(source, self.shell_source, event)
            event["type"] = "shell"
        if source == "/var/log/auth.log":
            if _grok(message, self.auth, event):
                event.pop("message", None)
            event["type"] = "auth"
            self._date(event)
        if source is not None and "openvpn" in source:
            _grok(message, self.openvpn_header, event)
            _grok(message, self.openvpn_login, event)
            event["type"] = "openvpn"
            self._geoip(event)
        return event

    @staticmethod
    def _date(event: dict[str, Any]) -> None:
        """``date { match => [ "[system][auth][timestamp]", "MMM  d HH:mm:ss", "MMM dd HH:mm:ss" ] }``."""
        ts = event.get("system", {}).get("auth", {}).get("timestamp") if isinstance(event.get("system"), dict) else None
        if not isinstance(ts, str):
            return
        year = str(event.get("@timestamp", ""))[:4] or str(datetime.now(UTC).year)
        try:
            when = datetime.strptime(f"{year} {' '.join(ts.split())}", "%Y %b %d %H:%M:%S")
        except ValueError:
            event.setdefault("tags", []).append("_dateparsefailure")
            return
        event["@timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _geoip(self, event: dict[str, Any]) -> None:
        """``geoip { source => "vpnhost" target => "geoip" }`` with the City database, no cache."""
        ip = event.get("vpnhost")
        if self.city is None or not isinstance(ip, str):
            return
        import geoip2.errors

        try:
            r = self.city.city(ip)
        except (geoip2.errors.AddressNotFoundError, ValueError):
            event.setdefault("tags", []).append("_geoip_lookup_failure")
            return
        geo: dict[str, Any] = {"ip": ip}
        if r.country.iso_code:
            geo["country_code2"] = r.country.iso_code
            geo["country_name"] = r.country.name
        if r.continent.code:
            geo["continent_code"] = r.continent.code
        if r.city.name:
            geo["city_name"] = r.city.name
        if r.subdivisions.most_specific.name:
            geo["region_name"] = r.subdivisions.most_specific.name
            geo["region_code"] = r.subdivisions.most_specific.iso_code
        if r.postal.code:
            geo["postal_code"] = r.postal.code
        if r.location.time_zone:
            geo["timezone"] = r.location.time_zone
        if r.location.latitude is not None and r.location.longitude is not None:
            geo["latitude"] = r.location.latitude
            geo["longitude"] = r.location.longitude
            geo["location"] = {"lat": r.location.latitude, "lon": r.location.longitude}
        event["geoip"] = geo

    def process(self, raws: list[bytes]) -> list[bytes]:
        """Decode, filter and encode each event as one ``_bulk`` action + document pair."""
        out = []
        for raw in raws:
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:  # the json codec keeps the text, tagged
                event = {"message": raw.decode("utf-8", "replace"), "tags": ["_jsonparsefailure"]}
            event["@version"] = "1"
            self.filter(event)
            ts = event.get("@timestamp")
            if not isinstance(ts, str) or len(ts) < 10:
                ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                event["@timestamp"] = ts
            action = {"index": {"_index": f"audit-{ts[0:4]}.{ts[5:7]}.{ts[8:10]}"}}
            out.append(orjson.dumps(action) + b"\n" + orjson.dumps(event) + b"\n")
        return out
