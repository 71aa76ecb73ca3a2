"""slack: an incoming-webhook message (Block Kit blocks plus the ``text`` fallback of notifications).

Blocks: a header (rule and severity), a section with the reason, a section of fields (user,
source IP, country, host, count, key owner, time, window), the Kibana links, and a context line
with the alert id. Slack-compatible receivers (Mattermost, Rocket.Chat) read the same payload.

Values an outsider chose (user names tried, host names) are escaped for Slack's mrkdwn (``&``,
``<``, ``>``: so ``<!channel>`` in a user name pings nobody) and shown as code, where Slack
neither formats nor links them.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.notify.config import SlackOutput
from ingest.notify.message import Alert, Facts, Links, Summary, clean
from ingest.notify.outputs.base import Channel, SendError, ssl_context, url_secrets
from ingest.notify.outputs.http import opener, post_json

#: fields whose values come from log lines (shown as code); the others are ours
VERBATIM = frozenset({"User", "Source IP", "Country", "Host", "Key owner"})
HEADER_LIMIT = 150
FIELD_LIMIT = 1900


def escape(text: str) -> str:
    """Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    return "`" + escape(text.replace("`", "'")) + "`"


def _link(url: str | None, label: str) -> str | None:
    return f"<{url}|{label}>" if url else None


def alert_payload(alert: Alert, facts: Facts) -> dict[str, Any]:
    severity = f" (severity {facts.severity})" if facts.severity else ""
    header = clean(f"Alert: {facts.rule}{severity}", HEADER_LIMIT)
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n" + (code(value) if label in VERBATIM else escape(value))[
        :FIELD_LIMIT]} for label, value in facts.rows() if label not in ("Rule", "Severity")][:10]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": escape(facts.reason or facts.headline())[:2900]}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    links = [x for x in (_link(facts.link, "Open the alert in Kibana"),
                         _link(facts.alerts_link, "Alerts around it")) if x]
    if links:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": " · ".join(links)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"audit-ingest · alert {code(facts.id)} · {escape(facts.time)}"}]})
    text = f"[audit] {facts.rule}{severity}: {facts.reason or facts.headline()}"
    if facts.link:
        text += f" {facts.link}"
    return {"text": escape(clean(text, 2900)), "blocks": blocks}


def summary_payload(summary: Summary) -> dict[str, Any]:
    header = clean(f"{len(summary.alerts)} more alerts (rate limit)", HEADER_LIMIT)
    intro = (f"Output *{escape(summary.output)}* sends at most {summary.limit} messages {summary.per}; these "
             f"{len(summary.alerts)} alerts from {escape(summary.start)} to {escape(summary.end)} were held back.")
    fields = [{"type": "mrkdwn", "text": f"*{escape(rule)}*\n{n}"} for rule, n in summary.by_rule[:10]]
    lines = [f"• {escape(f.rule)} " + " ".join(code(x) for x in (f.source(), ", ".join(f.users[:3]),
                                                                  ", ".join(f.hosts[:3])) if x)
             for f in summary.facts[:15]]
    if len(summary.facts) > 15:
        lines.append(f"… and {len(summary.facts) - 15} more")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": intro}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    if summary.link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _link(summary.link, "Open these alerts in Kibana")}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "audit-ingest · rate-limit summary"}]})
    text = f"[audit] {summary.headline()}"
    return {"text": escape(clean(text, 2900)), "blocks": blocks}


class SlackChannel(Channel):
    kind = "slack"

    def __init__(self, name: str, config: SlackOutput, links: Links) -> None:
        super().__init__(name, links)
        self.config = config
        self._open = opener(ssl_context(config.ca_certs, config.verify_certs))

    @property
    def secrets(self) -> list[str]:
        return url_secrets(self.config.url.get_secret_value())

    def _post(self, payload: dict[str, Any]) -> str:
        try:
            status, answer = post_json(self._open, self.config.url.get_secret_value(), orjson.dumps(payload), {},
                                       self.config.timeout.total_seconds())
        except SendError as e:
            e.reason = self.redact(e.reason)
            raise
        return f"HTTP {status}" + (f" {self.redact(answer.strip())[:40]}" if answer.strip() else "")

    def send(self, alert: Alert, facts: Facts) -> str:
        return self._post(alert_payload(alert, facts))

    def send_summary(self, summary: Summary) -> str:
        return self._post(summary_payload(summary))
