"""What a notification says: the facts of an alert document, and the Kibana links to it.

Every output (Slack blocks, e-mail text, webhook JSON) is built from the same :class:`Facts`, so
they say the same thing. Values a stranger chose (user names tried in a brute force, host names)
are cleaned here of control characters and cut to a length; each output escapes them for its own
format on top.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import orjson

from ingest.document import format_timestamp, parse_timestamp

#: ids of the saved objects in kibana/audit.ndjson the links open
ALERTS_DATA_VIEW = "audit-ingest-alerts"
ALERTS_SEARCH = "audit-search-alerts"
#: how much time around an alert the "all alerts" link shows
AROUND = timedelta(hours=1)

VALUE_LIMIT = 200
LIST_LIMIT = 10


def clean(value: object, limit: int = VALUE_LIMIT) -> str:
    """One line of text: control characters (newlines too) become spaces, cut to ``limit`` characters."""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _get(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _listed(values: object) -> list[str]:
    if values is None:
        return []
    items = values if isinstance(values, list) else [values]
    return [clean(v) for v in items if v not in (None, "")]


def _joined(values: list[str]) -> str:
    if len(values) <= LIST_LIMIT:
        return ", ".join(values)
    return ", ".join(values[:LIST_LIMIT]) + f" and {len(values) - LIST_LIMIT} more"


@dataclass(slots=True)
class Alert:
    """An alert as queued: its id, index and document."""

    id: str
    index: str
    doc: dict[str, Any]

    def encode(self) -> bytes:
        """As stored in the queue and in dead letters: the shape of an Elasticsearch hit."""
        return orjson.dumps({"_index": self.index, "_id": self.id, "_source": self.doc})

    @classmethod
    def decode(cls, raw: bytes | str) -> Alert:
        hit = orjson.loads(raw)
        return cls(str(hit["_id"]), str(hit["_index"]), dict(hit["_source"]))


@dataclass(slots=True)
class Links:
    """Where a person reads the alert: Kibana's single-document view and the Alerts saved search."""

    base: str | None  # Kibana base URL (with /s/<space>), None when unknown

    def document(self, alert: Alert) -> str | None:
        if not self.base:
            return None
        return (f"{self.base}/app/discover#/doc/{ALERTS_DATA_VIEW}/{quote(alert.index, safe='')}"
                f"?id={quote(alert.id, safe='')}")

    def alerts(self, start: str | None, end: str | None) -> str | None:
        """The Alerts saved search, showing ``start``..``end`` (ISO times) widened by an hour each side."""
        if not self.base:
            return None
        url = f"{self.base}/app/discover#/view/{ALERTS_SEARCH}"
        try:
            lo = format_timestamp(parse_timestamp(start) - AROUND) if start else None
            hi = format_timestamp(parse_timestamp(end) + AROUND) if end else None
        except ValueError:
            return url
        if lo and hi:
            url += f"?_g=(time:(from:'{lo}',to:'{hi}'))"
        return url

    @classmethod
    def build(cls, url: str | None, space: str | None = None) -> Links:
        if not url:
            return cls(None)
        base = url.rstrip("/")
        if space and space != "default":
            base += f"/s/{quote(space, safe='')}"
        return cls(base)


@dataclass(slots=True)
class Facts:
    """The facts every message of one alert gives, as clean one-line strings."""

    id: str
    rule: str
    severity: str
    reason: str
    time: str
    users: list[str] = field(default_factory=list)
    source_ip: str = ""
    country: str = ""
    hosts: list[str] = field(default_factory=list)
    count: str = ""
    window: str = ""
    key_owner: str = ""
    link: str | None = None
    alerts_link: str | None = None

    @classmethod
    def of(cls, alert: Alert, links: Links) -> Facts:
        doc = alert.doc
        geo = _get(doc, "source.geo") or {}
        name, iso = (clean(geo.get("country_name") or "", 60), clean(geo.get("country_iso_code") or "", 8)
                     ) if isinstance(geo, dict) else ("", "")
        country = f"{name} ({iso})" if name and iso else name or iso
        window = _get(doc, "alert.window") or {}
        span = ""
        if isinstance(window, dict) and window.get("start") and window.get("end"):
            span = f"{clean(window['start'], 40)} – {clean(window['end'], 40)}"
        count = _get(doc, "alert.count")
        severity = _get(doc, "event.severity")
        time = clean(doc.get("@timestamp") or "", 40)
        return cls(
            id=clean(alert.id), rule=clean(_get(doc, "rule.name") or "alert", 80),
            severity="" if severity is None else clean(severity, 10),
            reason=clean(_get(doc, "event.reason") or "", 1000), time=time,
            users=_listed(_get(doc, "alert.users") or _get(doc, "user.name")),
            source_ip=clean(_get(doc, "source.ip") or "", 60), country=country,
            hosts=_listed(_get(doc, "alert.hosts") or _get(doc, "host.hostname")),
            count="" if count is None else clean(count, 20), window=span,
            key_owner=clean(_get(doc, "system.auth.ssh.key.owner") or "", 120),
            link=links.document(alert), alerts_link=links.alerts(time or None, time or None))

    def source(self) -> str:
        """``89.160.20.128 (Sweden (SE))``, the IP alone, or ''."""
        if self.source_ip and self.country:
            return f"{self.source_ip} ({self.country})"
        return self.source_ip

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) of every fact that has a value, in reading order."""
        rows = [("Rule", self.rule), ("Severity", self.severity), ("User", _joined(self.users)),
                ("Source IP", self.source_ip), ("Country", self.country), ("Host", _joined(self.hosts)),
                ("Count", self.count), ("Key owner", self.key_owner), ("Time", self.time),
                ("Window", self.window)]
        return [(label, value) for label, value in rows if value]

    def headline(self) -> str:
        """One line: ``brute_force from 89.160.20.128 (SE) on a3, web-2 (user root)``."""
        parts = [self.rule]
        if self.source_ip:
            iso = self.country.rsplit("(", 1)[-1].rstrip(")") if self.country else ""
            parts.append(f"from {self.source_ip}" + (f" ({iso})" if iso else ""))
        if self.hosts:
            parts.append("on " + _joined(self.hosts))
        if self.users:
            parts.append(f"({'users' if len(self.users) > 1 else 'user'} {_joined(self.users)})")
        return clean(" ".join(parts), 180)


@dataclass(slots=True)
class Summary:
    """The alerts a rate limit held back, told in one message."""

    output: str
    limit: int
    alerts: list[Alert]
    facts: list[Facts]
    by_rule: list[tuple[str, int]]
    start: str
    end: str
    link: str | None
    per: str = "a minute"  # the rate window, in words

    @classmethod
    def of(cls, output: str, limit: int, alerts: Sequence[Alert], links: Links,
           window: timedelta = timedelta(minutes=1)) -> Summary:
        facts = [Facts.of(a, links) for a in alerts]
        rules = Counter(f.rule for f in facts)
        times = sorted(f.time for f in facts if f.time)
        start, end = (times[0], times[-1]) if times else ("", "")
        seconds = window.total_seconds()
        per = "a minute" if seconds == 60 else f"per {seconds:g} s"
        return cls(output, limit, list(alerts), facts, rules.most_common(), start, end,
                   links.alerts(start or None, end or None), per)

    def headline(self) -> str:
        rules = ", ".join(f"{rule} ×{n}" for rule, n in self.by_rule[:LIST_LIMIT])
        return f"{len(self.alerts)} more alerts ({rules}): rate limit of {self.limit} messages {self.per} reached"


def sample_alert(now: str, index_prefix: str = "audit-alerts-") -> Alert:
    """What ``audit-ingest notify-test`` sends: a brute-force alert marked as a test."""
    doc = {
        "@timestamp": now, "type": "alert", "tags": ["notify-test"],
        "event": {"kind": "alert", "severity": 73, "created": now,
                  "reason": "TEST from audit-ingest notify-test: 12 authentication failures from 192.0.2.10 "
                            "within 60 s on 2 host(s), more than the threshold of 10."},
        "rule": {"name": "brute_force"},
        "source": {"ip": "192.0.2.10", "geo": {"country_iso_code": "SE", "country_name": "Sweden"}},
        "alert": {"hosts": ["bastion-1", "web-2"], "users": ["root", "admin"], "count": 12,
                  "window": {"start": now, "end": now}},
    }
    index = f"{index_prefix}{now[:10].replace('-', '.')}"
    return Alert(f"notify-test-{now}", index, doc)
