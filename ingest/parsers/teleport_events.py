"""The Teleport event table (``patterns/teleport.events.toml``): event.category / event.type by name.

Data, so a user can categorise an event Teleport adds later without a code change: the last
pattern folder holding ``teleport.events.toml`` wins, as for ``<kind>.rules.toml``. Validated when
the parser is built (unknown keys, wrong types stop the start with the file named).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.errors import PatternError
from ingest.grok import default_pattern_folders

FILE_NAME = "teleport.events.toml"


class _EventSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: list[str] | None = Field(None, description="event.category.")
    type: list[str] | None = Field(None, description="event.type.")
    type_by_code: dict[str, list[str]] = Field(default_factory=dict, description="event.type by the event's code.")
    type_by_action: dict[str, list[str]] = Field(default_factory=dict,
                                                 description="event.type by the event's `action` field.")


class _TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: dict[str, _EventSpec] = Field(default_factory=dict, description="Event name prefix -> what it gives.")
    event: dict[str, _EventSpec] = Field(default_factory=dict, description="Event name -> what it gives.")


@dataclass(frozen=True, slots=True)
class EventKind:
    """What the documents of one event name get."""

    category: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    type_by_code: dict[str, tuple[str, ...]] = field(default_factory=dict)
    type_by_action: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def event_type(self, code: object, action: object) -> tuple[str, ...]:
        if self.type_by_code and isinstance(code, str) and code in self.type_by_code:
            return self.type_by_code[code]
        if self.type_by_action and isinstance(action, str) and action in self.type_by_action:
            return self.type_by_action[action]
        return self.type


_NONE = EventKind()


class EventTable:
    """Event name -> :class:`EventKind`: the longest matching prefix, then the event's own entry."""

    def __init__(self, spec: _TableSpec) -> None:
        self._prefixes = sorted(spec.prefix.items(), key=lambda kv: len(kv[0]), reverse=True)
        self._events = spec.event
        self._cache: dict[str, EventKind] = {}

    def get(self, name: str) -> EventKind:
        found = self._cache.get(name)
        if found is None:
            if len(self._cache) >= 4096:  # event names are few; a flood of made-up ones must not grow it
                self._cache.clear()
            found = self._cache[name] = self._merge(name)
        return found

    def _merge(self, name: str) -> EventKind:
        parts = [spec for prefix, spec in self._prefixes if name.startswith(prefix)][:1]
        if name in self._events:
            parts.append(self._events[name])
        if not parts:
            return _NONE
        category: list[str] = []
        kinds: list[str] = []
        by_code: dict[str, tuple[str, ...]] = {}
        by_action: dict[str, tuple[str, ...]] = {}
        for spec in parts:
            if spec.category is not None:
                category = spec.category
            if spec.type is not None:
                kinds = spec.type
            by_code.update({k: tuple(v) for k, v in spec.type_by_code.items()})
            by_action.update({k: tuple(v) for k, v in spec.type_by_action.items()})
        return EventKind(tuple(category), tuple(kinds), by_code, by_action)


def table_file(folders: list[Path] | None = None) -> Path:
    """The ``teleport.events.toml`` in effect: the last of ``folders`` holding one."""
    chosen = folders or default_pattern_folders()
    for folder in reversed(chosen):
        path = folder / FILE_NAME
        if path.is_file():
            return path
    raise PatternError(f"no {FILE_NAME} in the pattern folders", path=", ".join(str(f) for f in chosen))


@lru_cache(maxsize=8)
def load_table(path: Path) -> EventTable:
    try:
        spec = _TableSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
        raise PatternError(f"cannot read the Teleport event table: {e}", path=str(path)) from e
    return EventTable(spec)


def event_table(folders: list[Path] | None = None) -> EventTable:
    return load_table(table_file(folders))
