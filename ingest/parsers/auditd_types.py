"""The auditd record-type table (``patterns/auditd.types.toml``): numbers, actions, ECS categories.

Data, not code, so a user can rename an action, change a category or add a record type auditd
learns later without touching the parser: the last pattern folder holding ``auditd.types.toml``
wins, as for ``<kind>.rules.toml``. The file is validated when the parser is built (unknown keys,
wrong types and duplicate numbers stop the start with the file named).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.errors import PatternError
from ingest.grok import default_pattern_folders

FILE_NAME = "auditd.types.toml"


class _RecordSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=0, description="The kernel's number of the record type (type=1112).")
    action: str | None = Field(None, min_length=1, description="event.action (default: the name lowercased).")
    category: list[str] = Field(default_factory=list, description="event.category of its documents.")
    type: list[str] = Field(default_factory=list, description="event.type of its documents.")
    type_by_op: dict[str, list[str]] = Field(default_factory=dict,
                                             description="event.type by the record's op= value (else `type`).")


class _TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: dict[str, _RecordSpec] = Field(description="Record type name (as after type=) -> what it gives.")


@dataclass(frozen=True, slots=True)
class RecordType:
    """What the documents of one record type get."""

    name: str
    action: str
    category: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    type_by_op: MappingProxyType[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def event_type(self, op: Any) -> tuple[str, ...]:
        """event.type for a record whose ``op=`` is ``op``."""
        if self.type_by_op and type(op) is str:
            return self.type_by_op.get(op, self.type)
        return self.type


@dataclass(frozen=True, slots=True)
class RecordTable:
    """Record types by name, and names by number (for ``type=1400`` / ``type=UNKNOWN[1400]``).

    Plain dicts (looked up once per line on the hot path); nothing changes them after loading.
    """

    by_name: dict[str, RecordType]
    names_by_number: dict[str, str]

    def lookup(self, written: str) -> tuple[str, RecordType | None]:
        """The name and type for what follows ``type=``: ``AVC``, ``1400`` or ``UNKNOWN[1400]``."""
        spec = self.by_name.get(written)
        if spec is not None:
            return written, spec
        number = written[8:-1] if written.startswith("UNKNOWN[") and written.endswith("]") else written
        name = self.names_by_number.get(number, written)
        return name, self.by_name.get(name)


def table_file(folders: list[Path] | None = None) -> Path:
    """The ``auditd.types.toml`` in effect: the last of ``folders`` holding one."""
    for folder in reversed(folders or default_pattern_folders()):
        path = folder / FILE_NAME
        if path.is_file():
            return path
    raise PatternError(f"no {FILE_NAME} in the pattern folders",
                       path=", ".join(str(f) for f in (folders or default_pattern_folders())))


@lru_cache(maxsize=8)
def load_table(path: Path) -> RecordTable:
    """The table in ``path`` (read once per process and path)."""
    try:
        spec = _TableSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
        raise PatternError(f"cannot read the auditd record types: {e}", path=str(path)) from e
    by_name: dict[str, RecordType] = {}
    by_number: dict[str, str] = {}
    for name, rec in spec.records.items():
        number = str(rec.number)
        if number in by_number:
            raise PatternError(f"record types {by_number[number]} and {name} have the same number {number}",
                               path=str(path))
        by_number[number] = name
        by_name[name] = RecordType(
            name=name, action=rec.action or name.lower(), category=tuple(rec.category), type=tuple(rec.type),
            type_by_op=MappingProxyType({op: tuple(t) for op, t in rec.type_by_op.items()}),
        )
    return RecordTable(by_name, by_number)


def record_table(folders: list[Path] | None = None) -> RecordTable:
    return load_table(table_file(folders))
