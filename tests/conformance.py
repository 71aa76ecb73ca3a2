"""Compare our documents with the documents Filebeat's own ingest pipelines produced.

The expected files (``tests/data/conformance/filebeat/<module>/<log>-expected.json``) are JSON
lists of flat dotted-key documents, one per line of the log; for long logs only the first lines
have one. Usage::

    expected = load_expected(path)            # list of flat dicts
    ours = flatten(parser.parse(line, ctx))   # ingest.document.flatten
    mismatches = compare(ours, expected[i], FIELDS)
    print(summary(results))

Values are compared as strings (``48`` equals ``"48"``), lists element by element (a value equals
a list holding only it: Elasticsearch indexes ``"host"`` and ``["host"]`` alike), and fields whose
name ends in ``timestamp`` as instants (``...14.891Z`` equals ``...14.891000Z``). A field is
compared only when the expected document has it: fields Filebeat does not produce are ours alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.document import flatten, parse_timestamp

__all__ = [
    "Mismatch",
    "Tally",
    "compare",
    "compared_fields",
    "flatten",
    "load_expected",
    "read_lines",
    "summary",
]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One compared field whose values differ (``ours`` is None when we lack the field)."""

    field: str
    ours: Any
    expected: Any

    def __str__(self) -> str:
        ours = "<missing>" if self.ours is _MISSING else repr(self.ours)
        return f"{self.field}: ours {ours}, Filebeat {self.expected!r}"


@dataclass(slots=True)
class Tally:
    """Counts over many compared documents."""

    compared: int = 0
    agreed: int = 0
    by_field: dict[str, list[int]] = field(default_factory=dict)  # field -> [compared, agreed]

    def add(self, fields: Iterable[str], mismatches: Sequence[Mismatch]) -> None:
        wrong = {m.field for m in mismatches}
        for name in fields:
            counts = self.by_field.setdefault(name, [0, 0])
            counts[0] += 1
            self.compared += 1
            if name not in wrong:
                counts[1] += 1
                self.agreed += 1

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 1.0


def load_expected(path: str | Path) -> list[dict[str, Any]]:
    """The expected documents of one Filebeat test log (a JSON list of flat dicts)."""
    with open(path, encoding="utf-8") as f:
        docs = json.load(f)
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        raise ValueError(f"{path}: expected a JSON list of objects")
    return docs


def read_lines(path: str | Path) -> list[str]:
    """Lines of a test log without their line ends (the last line may lack one)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return f.read().splitlines()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(name: str, ours: Any, expected: Any) -> bool:
    if isinstance(ours, list) and not isinstance(expected, list) and len(ours) == 1:
        ours = ours[0]
    elif isinstance(expected, list) and not isinstance(ours, list) and len(expected) == 1:
        expected = expected[0]
    if isinstance(expected, list) or isinstance(ours, list):
        if not (isinstance(expected, list) and isinstance(ours, list)) or len(ours) != len(expected):
            return False
        return all(_same(name, o, e) for o, e in zip(ours, expected, strict=True))
    if name.endswith("timestamp"):
        try:
            return parse_timestamp(_text(ours)) == parse_timestamp(_text(expected))
        except ValueError:
            pass
    return _text(ours) == _text(expected)


def compare(
    ours_flat: dict[str, Any], expected_flat: dict[str, Any], fields: Iterable[str]
) -> list[Mismatch]:
    """Mismatches on ``fields`` that the expected document has (missing on our side included)."""
    out = []
    for name in fields:
        if name not in expected_flat:
            continue
        expected = expected_flat[name]
        ours = ours_flat.get(name, _MISSING)
        if ours is _MISSING or not _same(name, ours, expected):
            out.append(Mismatch(name, ours, expected))
    return out


def compared_fields(expected_flat: dict[str, Any], fields: Iterable[str]) -> list[str]:
    """The ``fields`` that :func:`compare` looks at for this expected document."""
    return [name for name in fields if name in expected_flat]


def summary(tally: Tally, title: str = "conformance") -> str:
    """Overall agreement and the per-field figures, worst field first."""
    lines = [f"{title}: {tally.agreed}/{tally.compared} values agree ({tally.agreement:.2%})"]
    for name, (compared, agreed) in sorted(
        tally.by_field.items(), key=lambda kv: (kv[1][1] / kv[1][0], kv[0])
    ):
        lines.append(f"  {name:32s} {agreed:5d}/{compared:<5d} {agreed / compared:7.2%}")
    return "\n".join(lines)


def agreement(results: Iterable[tuple[str, int, list[str], list[Mismatch]]],
              deliberate: Mapping[tuple[str, int, str], str]) -> tuple[Tally, int, list[str]]:
    """Tally of ``(file, line, compared fields, mismatches)`` results: (tally, mismatches explained by
    ``deliberate``, the unexplained ones as ``file:line: field: ours ..., Filebeat ...``)."""
    tally, explained, unexplained = Tally(), 0, []
    for log, number, fields, mismatches in results:
        tally.add(fields, mismatches)
        for m in mismatches:
            if (log, number, m.field) in deliberate:
                explained += 1
            else:
                unexplained.append(f"{log}:{number}: {m}")
    return tally, explained, unexplained
