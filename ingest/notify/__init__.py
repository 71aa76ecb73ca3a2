"""Notifications: alerts that reach a person (webhook, Slack, e-mail), issue 13.

- :mod:`~ingest.notify.config`: the ``notify.*`` settings;
- :mod:`~ingest.notify.hook`: the worker's side, the alerts of a batch queued in its ack;
- :mod:`~ingest.notify.queue`: the Redis queue (key layout, leases, retries, dead letters);
- :mod:`~ingest.notify.ratelimit`: messages per minute per output, and the summary of the rest;
- :mod:`~ingest.notify.sender`: the threads that claim and send, beside the worker loop;
- :mod:`~ingest.notify.message` and :mod:`~ingest.notify.outputs`: what a message says, per output;
- :mod:`~ingest.notify.build`: all of it from the settings, and ``audit-ingest notify-test``.

This package imports nothing heavy: the settings import :class:`NotifyConfig` from here.
"""

from ingest.notify.config import NotifyConfig

__all__ = ["NotifyConfig"]
