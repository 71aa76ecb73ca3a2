"""The outputs: webhook (JSON POST), slack (incoming webhook), email (SMTP)."""

from __future__ import annotations

from ingest.notify.config import EmailOutput, SlackOutput, WebhookOutput
from ingest.notify.message import Links
from ingest.notify.outputs.base import Channel, SendError
from ingest.notify.outputs.email import EmailChannel
from ingest.notify.outputs.slack import SlackChannel
from ingest.notify.outputs.webhook import WebhookChannel

__all__ = ["Channel", "SendError", "build_channel"]


def build_channel(name: str, config: WebhookOutput | SlackOutput | EmailOutput, links: Links) -> Channel:
    if isinstance(config, WebhookOutput):
        return WebhookChannel(name, config, links)
    if isinstance(config, SlackOutput):
        return SlackChannel(name, config, links)
    return EmailChannel(name, config, links)
