"""Rule files: which grok expressions to try for which program, and what to add on a match.

``patterns/<kind>.rules.toml`` holds a ``header``: one grok expression or a list of them, the forms a
line may start with (tried in order, the first that matches splits the line; empty: no header) and
an ordered list of ``[[rules]]`` with ``name``, optional ``programs``, ``match`` (grok), ``set``
(constant fields, dotted names) and ``tags``. Keeping them in files means a new line shape is a
pattern change, not a code change.

``unwrap`` (optional) lists expressions tried on the message after the header: the first that
matches adds its fields and may name the text the rules get instead (``[@metadata][body]``), for
messages that quote another program's line (Access Server quoting OpenVPN's).

A header entry that is one pattern reference whose definition is an alternation of anchored
pattern references (``SYSLOG_HEADER (?:%{SYSLOG_HEADER_BSD}|%{SYSLOG_HEADER_5424}|...)``) is tried
one alternative at a time: the same first match, but each form's writer fetches only its own
captures (the common form stays as cheap as a single expression).
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
    #: literal text every match contains that ``prefix`` does not already check ('' if none): lines
    #: without it skip the regex too (``pam_`` starts every PAM rule, ``: session opened for`` only one)
    required: str = ""


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


_ESCAPED_LITERAL = set("[](){}.*+?|^$\\/-:'\" #%<>=,;@!&~")


def required_literal(expression: str) -> str:
    """The longest literal text any match of ``expression`` must contain ('' if none is certain).

    Only text at the top level of the expression counts: groups (anything in parentheses, including
    a pattern reference's expansion), character classes and the characters a quantifier applies to
    are skipped, and a top-level alternation means nothing is certain. So ``^%{VPN_PEER} MULTI:
    Learn: (?:...)`` requires ``" MULTI: Learn: "``.
    """
    if "(?i" in expression or "(?x" in expression:
        return ""  # flags change what a literal means
    runs: list[str] = []
    run: list[str] = []
    i, n = 0, len(expression)

    def close() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    while i < n:
        ch = expression[i]
        if ch == "%" and expression.startswith("%{", i):
            end = expression.find("}", i)
            if end < 0:
                return ""
            close()
            i = end + 1
        elif ch == "(":
            close()
            depth, i = 1, i + 1
            while i < n and depth:
                c = expression[i]
                if c == "\\":
                    i += 1
                elif c == "[":
                    i = _class_end(expression, i)
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                i += 1
        elif ch == "[":
            close()
            i = _class_end(expression, i) + 1
        elif ch == "|":
            return ""
        elif ch in "?*{":
            if run:
                run.pop()  # the quantified character is optional
            close()
            if ch == "{":
                end = expression.find("}", i)
                i = end + 1 if end > 0 else n
            else:
                i += 1
        elif ch == "+":
            close()  # the character is required once: the run ends with it
            i += 1
        elif ch in "^$.":
            close()
            i += 1
        elif ch == "\\":
            nxt = expression[i + 1:i + 2]
            if nxt and nxt in _ESCAPED_LITERAL:
                run.append(nxt)
                i += 2
            else:  # a class (\\s, \\d...), an anchor or a code point: no literal text to rely on
                close()
                i += {"x": 4, "u": 6, "U": 10}.get(nxt, 2)
        else:
            run.append(ch)
            i += 1
    close()
    return max(runs, key=len, default="")


def _class_end(expression: str, start: int) -> int:
    """Index of the ``]`` closing the character class that opens at ``start``."""
    i = start + 1
    if expression[i:i + 1] == "^":
        i += 1
    if expression[i:i + 1] == "]":
        i += 1
    while i < len(expression) and expression[i] != "]":
        if expression[i] == "\\":
            i += 1
        i += 1
    return i


_SINGLE_REFERENCE = re.compile(r"^%\{(\w+)\}$")
_ALTERNATIVES = re.compile(r"^\(\?:((?:%\{\w+\}\|)+%\{\w+\})\)$")


def header_forms(expressions: list[str], library: PatternLibrary) -> list[str]:
    """The header expressions to try in order: a reference to an alternation of references is split."""
    forms: list[str] = []
    for expression in expressions:
        m = _SINGLE_REFERENCE.match(expression.strip())
        body = library.definition(m.group(1)) if m else None
        alternation = _ALTERNATIVES.match(body) if body else None
        if alternation is None:
            forms.append(expression)
            continue
        names = re.findall(r"%\{(\w+)\}", alternation.group(1))
        if all((library.definition(name) or "").startswith("^") for name in names):
            forms.extend(header_forms([f"%{{{name}}}" for name in names], library))
        else:
            forms.append(expression)
    return forms


@dataclass(slots=True)
class RuleSet:
    """The rules of one kind, with the per-program candidate lists computed on first use."""

    path: str
    #: the header forms, tried in order (empty: the lines have no header)
    headers: list[Grok]
    rules: list[Rule]
    #: forms tried on the message after the header (first match), with their literal start ('' if none)
    unwrap: list[tuple[str, Grok]] = field(default_factory=list)
    #: per header form, ``write(m, doc)`` for the parser's fresh documents (see ``load_rules``)
    header_writers: list[Callable[[Any, dict[str, Any]], None]] = field(default_factory=list)
    #: per program some rule names; every other program shares one list (the rules for any
    #: program), so the cache holds at most one entry per program the rules name, whatever
    #: program names the lines carry (ingest.caches)
    _by_program: dict[str, list[Rule]] = field(default_factory=dict)
    _others: list[Rule] | None = None
    #: per program (as ``_by_program``, ``""`` for every other one): the candidates by the first
    #: character of the message, for the characters some rule's literal prefix starts with, and
    #: under ``""`` those of any other message (only the rules without a prefix)
    _by_start: dict[str, dict[str, list[Rule]]] = field(default_factory=dict)

    def candidates(self, program: str | None) -> list[Rule]:
        key = (program or "").lower()
        found = self._by_program.get(key)
        if found is None:
            if self._others is None:
                self._others = [r for r in self.rules if r.programs is None]
                named = {p for r in self.rules if r.programs is not None for p in r.programs}
                for name in named:
                    self._by_program[name] = [r for r in self.rules if r.programs is None or name in r.programs]
                found = self._by_program.get(key)
            if found is None:
                return self._others
        return found

    def candidates_for(self, program: str | None, body: str) -> list[Rule]:
        """The candidates of ``program`` that can match ``body``, as far as its first character
        tells: the rules of :meth:`candidates` in their order, less those whose literal prefix
        starts with another character (they would be skipped anyway)."""
        key = program.lower() if program else ""
        table = self._by_start.get(key)
        if table is None:
            table = self._start_table(key)
        found = table.get(body[:1])
        return found if found is not None else table[""]

    def _start_table(self, key: str) -> dict[str, list[Rule]]:
        if self._others is not None and key not in self._by_program:  # the common miss: a program no rule names
            shared = self._by_start.get("")
            if shared is not None:
                return shared
        rules = self.candidates(key)
        if key not in self._by_program:
            key = ""  # a program no rule names: the shared table (one entry, whatever the name)
        table = self._by_start.get(key)
        if table is None:
            starts = sorted({r.prefix[0] for r in rules if r.prefix})
            table = {ch: [r for r in rules if not r.prefix or r.prefix[0] == ch] for ch in starts}
            table[""] = [r for r in rules if not r.prefix]
            self._by_start[key] = table
        return table


def load_rules(path: Path, library: PatternLibrary,
               base: tuple[tuple[str, ...], ...] | None = None) -> RuleSet:
    """Load and compile one rules file; any problem raises :class:`PatternError` naming the rule.

    ``base``: the field paths of the documents the parser starts from, when it always starts from
    the same ones (None: unknown). With it, the writers make the objects no earlier step can have
    made (the header's, the unwrap form's) without looking for them first."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise PatternError(f"cannot read rules file: {e}", path=str(path)) from e
    except tomllib.TOMLDecodeError as e:
        raise PatternError(f"not valid TOML: {e}", path=str(path)) from e
    unknown = set(data) - {"header", "unwrap", "rules"}
    if unknown:
        raise PatternError(f"unknown top-level keys {sorted(unknown)}", path=str(path))
    header_expr = data.get("header", "")
    expressions = [header_expr] if isinstance(header_expr, str) else header_expr
    if not (isinstance(expressions, list) and all(isinstance(e, str) for e in expressions)):
        raise PatternError("`header` must be a grok expression or a list of them", path=str(path))
    headers = [library.compile(_anchored(form, library), origin=f"{path} header {number}")
               for number, form in enumerate(header_forms([e for e in expressions if e], library), start=1)]
    unwrap_exprs = data.get("unwrap", [])
    if not (isinstance(unwrap_exprs, list) and all(isinstance(e, str) and e for e in unwrap_exprs)):
        raise PatternError("`unwrap` must be a list of grok expressions", path=str(path))
    unwrap = [(literal_prefix(_expanded_start(e, library)),
               library.compile(_anchored(e, library), origin=f"{path} unwrap {number}"))
              for number, e in enumerate(unwrap_exprs, start=1)]
    header_writers = [h.writer(present=base) for h in headers]
    before_rules = None if base is None else (
        *base, *(f[1] for h in headers for f in h.fields), *(f[1] for _, u in unwrap for f in u.fields))
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
        prefix = literal_prefix(raw["match"], library.definition)
        rules.append(Rule(
            name=name,
            grok=grok,
            programs=frozenset(p.lower() for p in programs) if programs is not None else None,
            prefix=prefix,
            required=_also_required(prefix, required_literal(raw["match"])),
            write=grok.writer(constants, tuple(raw.get("tags", ())), present=before_rules),
        ))
    return RuleSet(str(path), headers, rules, unwrap, header_writers)


def _also_required(prefix: str, required: str) -> str:
    """``required``, unless the prefix check already makes sure of it."""
    return "" if required in prefix else required


def _expanded_start(expression: str, library: PatternLibrary) -> str:
    """The expression, or the definition of the pattern it only references (to see how it starts)."""
    m = _SINGLE_REFERENCE.match(expression.strip())
    body = library.definition(m.group(1)) if m else None
    return body if body is not None else expression


def _anchored(expression: str, library: PatternLibrary) -> str:
    """``^%{NAME}`` for a reference to an anchored pattern: the regex module only skips other start
    positions when the anchor is outside the group a reference expands to (a line no form matches
    would otherwise be tried at every position)."""
    if not expression.startswith("^") and _expanded_start(expression, library).startswith("^"):
        return "^" + expression
    return expression
