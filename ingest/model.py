"""The values that cross stage boundaries: what the pipeline hands the sink and the dead-letter list.

Kept in one small module so sources, pipeline, sinks and worker agree without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class IndexAction:
    """One document to index with the ``create`` op type, or with ``index`` and an external
    ``version`` when one is given (session documents: a later version corrects an earlier one).

    ``raw`` is the Redis entry the document came from (kept so that a rejected document can be
    dead-lettered with its original input); ``None`` for documents the pipeline made itself
    (sessions, alerts).
    """

    index: str
    id: str
    doc: dict[str, Any]
    raw: bytes | None = None
    version: int | None = None


@dataclass(slots=True)
class DeadLetter:
    """An input that cannot be indexed, kept with the reason instead of being dropped.

    ``stage`` is where it failed (``decode``, ``route``, ``parse``, ``index``); ``error_code`` is
    stable for metrics and searching; ``reason`` is one human sentence quoting at most 60
    characters of the offending value.
    """

    raw: bytes
    stage: str
    error_code: str
    reason: str
    status: int | None = None  # HTTP status from Elasticsearch, for stage "index"


@dataclass(slots=True)
class Rejected:
    """A document Elasticsearch refused for good (400/404 class): the sink's verdict on one action."""

    action: IndexAction
    status: int
    error_type: str
    reason: str


@dataclass(slots=True)
class BatchResult:
    """What the pipeline made of one batch of raw events."""

    actions: list[IndexAction] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
