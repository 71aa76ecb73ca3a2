"""The parser contract and the registry of parsers by kind.

A parser turns one line into one document: a nested dict with ECS / Filebeat-module field names,
``message`` (the line, always kept) and ``type`` (the seed's value: ``auth``, ``commands``,
``auditd``, ``openvpn``, ``teleport``, ``shell``). It never raises on bad input: a line it cannot
read is returned with tag ``_grokparsefailure`` (and whatever it could read).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar

from ingest.registry import registrar

PARSE_FAILURE_TAG = "_grokparsefailure"


@dataclass(slots=True)
class LineContext:
    """What a parser may know about a line besides its text.

    ``now`` is the reference time for year inference of classic syslog timestamps (the time the
    line was read: Filebeat's ``@timestamp`` when there is one); ``tz`` is the zone for timestamps
    that carry none.
    """

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    tz: tzinfo = UTC
    path: str | None = None
    host: str | None = None


class Parser(ABC):
    """One log kind. Subclasses set ``kind`` and implement :meth:`parse`."""

    kind: ClassVar[str]
    #: ``event.dataset`` of the documents this parser makes.
    dataset: ClassVar[str]

    def __init__(self, resources: Any = None) -> None:
        """``resources`` is the shared :class:`~ingest.parsers.resources.ParserResources` (patterns,
        rules, clock, zones); parsers that need none ignore it."""
        self.resources = resources

    @abstractmethod
    def parse(self, line: str, ctx: LineContext) -> dict[str, Any]:
        """The document for one line. Must not raise for any input string."""

    def base_document(self, line: str) -> dict[str, Any]:
        """Fields every document of this kind has before parsing."""
        return {
            "message": line,
            "type": self.kind,
            "event": {"kind": "event", "dataset": self.dataset},
        }


REGISTRY: dict[str, type[Parser]] = {}

#: Class decorator: make a class the parser for ``cls.kind``.
register = registrar(REGISTRY, "kind", "parsers")
