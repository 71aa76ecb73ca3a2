"""The sink contract: write one batch of documents, say which ones were refused for good."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ingest.model import IndexAction, Rejected


class Sink(ABC):
    """Writes batches. One hook: :meth:`write_batch`.

    When it returns, every action not in the returned list is durably stored (or was already:
    a redelivered event). It raises :class:`ingest.errors.SinkUnavailable` when it cannot finish
    now; the caller then gives the whole batch back without acknowledging it.
    """

    @abstractmethod
    def write_batch(self, actions: list[IndexAction]) -> list[Rejected]:
        """Store ``actions``; return those refused for good (to dead-letter), in input order."""
