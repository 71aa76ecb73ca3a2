"""webhook: each alert document POSTed as JSON, with ``_id`` and ``_index`` added at the top.

The body is the alert as indexed (``rule.name``, ``event.severity``, ``event.reason``,
``source.ip``, ``alert.*`` ...) plus ``_id``/``_index`` and, when the Kibana address is known,
``_kibana_url``. Headers ``Idempotency-Key`` and ``X-Audit-Ingest-Alert-Id`` carry the alert id,
so a receiver can drop the one duplicate a crashed sender may cause. A summary is
``{"type": "alert_summary", "count", "by_rule", "start", "end", "_kibana_url", "alerts": [...]}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.notify.config import WebhookOutput
from ingest.notify.message import Alert, Facts, Links, Summary
from ingest.notify.outputs.base import Channel, SendError, header_secrets, ssl_context, url_secrets
from ingest.notify.outputs.http import opener, post_json


def alert_body(alert: Alert, link: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"_id": alert.id, "_index": alert.index, **alert.doc}
    if link:
        body["_kibana_url"] = link
    return body


class WebhookChannel(Channel):
    kind = "webhook"

    def __init__(self, name: str, config: WebhookOutput, links: Links) -> None:
        super().__init__(name, links)
        self.config = config
        self._open = opener(ssl_context(config.ca_certs, config.verify_certs))

    @property
    def secrets(self) -> list[str]:
        out = url_secrets(self.config.url.get_secret_value())
        for value in self.config.headers.values():
            out += header_secrets(value.get_secret_value())
        return out

    def _post(self, body: dict[str, Any], alert_id: str) -> str:
        headers = {k: v.get_secret_value() for k, v in self.config.headers.items()}
        headers.setdefault("Idempotency-Key", alert_id)
        headers.setdefault("X-Audit-Ingest-Alert-Id", alert_id)
        try:
            status, _ = post_json(self._open, self.config.url.get_secret_value(), orjson.dumps(body, default=str),
                                  headers, self.config.timeout.total_seconds())
        except SendError as e:
            e.reason = self.redact(e.reason)
            raise
        return f"HTTP {status}"

    def send(self, alert: Alert, facts: Facts) -> str:
        return self._post(alert_body(alert, facts.link), alert.id)

    def send_summary(self, summary: Summary) -> str:
        body = {"type": "alert_summary", "output": summary.output, "count": len(summary.alerts),
                "rate_limit": summary.limit, "by_rule": dict(summary.by_rule), "start": summary.start,
                "end": summary.end, "_kibana_url": summary.link,
                "alerts": [alert_body(a, f.link) for a, f in zip(summary.alerts, summary.facts, strict=True)]}
        key = "summary-" + (summary.alerts[0].id if summary.alerts else "empty")
        return self._post(body, key)
