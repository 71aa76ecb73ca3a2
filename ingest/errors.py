"""One exception hierarchy; every error says where it came from.

Bad *input* (a line, an event) is never an exception that escapes a batch: it becomes data (a tag
or a dead letter, see ``ingest.deadletter``). These exceptions are for bad *configuration* and for
infrastructure failures that the worker handles by retrying.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(IngestError):
    """Configuration that cannot work: names the key and, where known, the file."""

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None) -> None:
        where = ", ".join(p for p in (f"file {path}" if path else "", f"key {key}" if key else "") if p)
        super().__init__(f"{message} ({where})" if where else message)
        self.key = key
        self.path = path


class PatternError(ConfigError):
    """A grok pattern file or rule that cannot be loaded: names file, line and pattern."""

    def __init__(self, message: str, *, path: str, line: int | None = None, pattern: str | None = None) -> None:
        loc = f"{path}:{line}" if line is not None else path
        name = f" pattern {pattern}" if pattern else ""
        Exception.__init__(self, f"{loc}:{name}: {message}")
        self.key = pattern
        self.path = path
        self.line = line
        self.pattern = pattern


class SinkUnavailable(IngestError):
    """Elasticsearch cannot take the batch now (down, 429/5xx for the request, connection lost)."""


class SourceUnavailable(IngestError):
    """Redis cannot be reached now."""
