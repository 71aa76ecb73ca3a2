"""Rule files: which grok expressions to try for which program, and what to add on a match.

``patterns/<kind>.rules.toml`` holds a ``header`` grok expression (empty: no syslog header) and an
ordered list of ``[[rules]]`` with ``name``, optional ``programs``, ``match`` (grok), ``set``
(constant fields, dotted names) and ``tags``. Keeping them in files means a new line shape is a
pattern change, not a code change.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
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
_OPTIONAL = ("?", "*", "{")
_REFERENCE_START = re.compile(r"%\{(\w+)(?::[^:{}]+)?(?::\w+)?\}")
_NAMED_GROUP_START = re.compile(r"\(\?P?<(?![=!])[^>]+>")


def literal_prefix(expression: str, resolve: Callable[[str], str | None] | None = None) -> str:
    """The literal text an anchored (``^...``) expression must start with, for a cheap pre-check.

    With ``resolve`` (pattern name -> its regex), a leading ``%{NAME}`` reference and named groups
    (``(?<field>...)``) are looked into, so ``^%{PAM_SERVICE}: ...`` gets ``pam_`` from
    ``PAM_MODULE (?<...>pam_[\\w-]+)``. Anything that could make the text optional or one of several
    (a quantifier after it, an alternation inside) ends the prefix there: a prefix may be shorter than
    it could be, never one a matching line lacks.
    """
    if not expression.startswith("^"):
        return ""
    return _prefix(expression[1:], resolve, 0)[0]


def _prefix(text: str, resolve: Callable[[str], str | None] | None, depth: int) -> tuple[str, bool]:
    """(literal start of ``text``, whether ``text`` is that literal and nothing more)."""
    if _has_top_level_alternation(text):
        return "", False
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        inner: str | None = None
        end = i
        if ch == "%" and resolve is not None and depth < 8:
            m = _REFERENCE_START.match(text, i)
            body = resolve(m.group(1)) if m else None
            if m is None or body is None:
                break
            inner_text, end = body, m.end()
        elif ch == "(":
            m = _NAMED_GROUP_START.match(text, i)
            close = _group_end(text, i) if m else None
            if m is None or close is None:
                break
            inner_text, end = text[m.end():close], close + 1
        else:
            inner_text = None
        if inner_text is not None:
            if text[end:end + 1] in _OPTIONAL or text[end:end + 1] == "+":
                break
            inner, complete = _prefix(inner_text, resolve, depth + 1)
            out.append(inner)
            if not complete:
                return "".join(out), False
            i = end
            continue
        if ch in _META:
            break
        if text[i + 1:i + 2] in _OPTIONAL:  # this literal is optional
            break
        out.append(ch)
        i += 1
    else:
        return "".join(out), True
    return "".join(out), False


def _scan(text: str, start: int) -> Iterator[tuple[int, str, int]]:
    """(index, character, group depth) of the regex syntax characters of ``text`` from ``start``,
    skipping escapes and character classes."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            j = i + 1
            if text[j:j + 1] == "^":
                j += 1
            if text[j:j + 1] == "]":
                j += 1
            while j < len(text) and text[j] != "]":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        yield i, ch, depth
        i += 1


def _group_end(text: str, start: int) -> int | None:
    """Index of the ``)`` closing the group opened at ``start``."""
    for i, ch, depth in _scan(text, start):
        if ch == ")" and depth == 0:
            return i
    return None


def _has_top_level_alternation(text: str) -> bool:
    return any(ch == "|" and depth == 0 for _, ch, depth in _scan(text, 0))


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
            prefix=literal_prefix(raw["match"], library.definition),
            write=grok.writer(constants, tuple(raw.get("tags", ()))),
        ))
    return RuleSet(str(path), header, rules)
