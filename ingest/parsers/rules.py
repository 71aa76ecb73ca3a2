"""Rule files: which grok expressions to try for which program, and what to add on a match.

``patterns/<kind>.rules.toml`` holds a ``header`` grok expression (empty: no syslog header) and an
ordered list of ``[[rules]]`` with ``name``, optional ``programs``, ``match`` (grok), ``set``
(constant fields, dotted names) and ``tags``. Keeping them in files means a new line shape is a
pattern change, not a code change.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.errors import PatternError
from ingest.grok import Grok, PatternLibrary

_RULE_KEYS = {"name", "programs", "match", "set", "tags"}


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    grok: Grok
    programs: frozenset[str] | None
    #: ``write(m, doc)``: the captures of a match, then the rule's ``set`` fields and ``tags`` (generated code)
    write: Callable[[Any, dict[str, Any]], None]
    #: literal text every match starts with ('' if none): lines without it skip the regex
    prefix: str = ""


_META = set("\\[](){}.*+?|^$%")


def literal_prefix(expression: str) -> str:
    """The literal text an anchored (``^...``) expression must start with, for a cheap pre-check."""
    if not expression.startswith("^"):
        return ""
    out = []
    for ch in expression[1:]:
        if ch in _META:
            break
        out.append(ch)
    if out and expression[1 + len(out):][:1] in ("?", "*", "{"):  # the last literal is optional
        out.pop()
    return "".join(out)


@dataclass(slots=True)
class RuleSet:
    """The rules of one kind, with the per-program candidate lists computed on first use."""

    path: str
    header: Grok | None
    rules: list[Rule]
    _by_program: dict[str, list[Rule]] = field(default_factory=dict)

    def candidates(self, program: str | None) -> list[Rule]:
        key = (program or "").lower()
        found = self._by_program.get(key)
        if found is None:
            found = [r for r in self.rules if r.programs is None or key in r.programs]
            self._by_program[key] = found
        return found


def load_rules(path: Path, library: PatternLibrary) -> RuleSet:
    """Load and compile one rules file; any problem raises :class:`PatternError` naming the rule."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise PatternError(f"cannot read rules file: {e}", path=str(path)) from e
    except tomllib.TOMLDecodeError as e:
        raise PatternError(f"not valid TOML: {e}", path=str(path)) from e
    unknown = set(data) - {"header", "rules"}
    if unknown:
        raise PatternError(f"unknown top-level keys {sorted(unknown)}", path=str(path))
    header_expr = data.get("header", "")
    header = library.compile(header_expr, origin=f"{path} header") if header_expr else None
    rules = []
    for number, raw in enumerate(data.get("rules", []), start=1):
        name = str(raw.get("name", f"#{number}"))
        origin = f"{path} rule {name}"
        extra = set(raw) - _RULE_KEYS
        if extra:
            raise PatternError(f"unknown keys {sorted(extra)}", path=origin)
        if not isinstance(raw.get("match"), str) or not raw["match"]:
            raise PatternError("a rule needs a non-empty `match` grok expression", path=origin)
        programs = raw.get("programs")
        if programs is not None and not (isinstance(programs, list) and all(isinstance(p, str) for p in programs)):
            raise PatternError("`programs` must be a list of program names", path=origin)
        set_fields = raw.get("set", {})
        if not isinstance(set_fields, dict):
            raise PatternError("`set` must be a table of dotted field names to values", path=origin)
        grok = library.compile(raw["match"], origin=origin)
        constants = tuple((tuple(k.split(".")), v) for k, v in set_fields.items())
        rules.append(Rule(
            name=name,
            grok=grok,
            programs=frozenset(p.lower() for p in programs) if programs is not None else None,
            prefix=literal_prefix(raw["match"]),
            write=grok.writer(constants, tuple(raw.get("tags", ()))),
        ))
    return RuleSet(str(path), header, rules)
