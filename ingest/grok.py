"""Grok on pygrok, speaking Logstash's dialect.

pygrok expands ``%{NAME}`` and ``%{NAME:field}`` from pattern files but only accepts ``\\w+``
field names and compiles with the ``regex`` module. Logstash users write field references
(``%{IP:[source][ip]}``, ``%{NUMBER:[process][pid]:int}``, ``(?<[user][name]>...)``) and expect
nested fields. So this module:

- loads pygrok's bundled patterns plus every ``*.grok`` file of the configured pattern folders
  (Logstash pattern-file format: ``NAME regex`` per line, ``#`` comments), remembering where each
  definition came from, so an error names file, line and pattern;
- rewrites every capture to a generated ``\\w+`` group name and keeps the map back to the field
  path and type (``int``/``integer``/``long``, ``float``);
- lets pygrok expand and compile the expression, then recompiles the expanded regex with the
  standard ``re`` module when it can (2-3x faster on our lines), falling back to pygrok's object;
- returns matches as nested dicts; empty captures are dropped (Logstash's
  ``keep_empty_captures => false``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygrok  # type: ignore[import-untyped]
import regex  # type: ignore[import-untyped]

from ingest.errors import PatternError

_BUNDLED_DIR = Path(pygrok.__file__).parent / "patterns"

# %{SYNTAX}, %{SYNTAX:SEMANTIC} or %{SYNTAX:SEMANTIC:TYPE}; SEMANTIC may be [a][b], a.b or a.
_REFERENCE = re.compile(r"%\{(\w+)(?::([^:{}]+))?(?::(\w+))?\}")
# Oniguruma-style named group (?<name>...) but not look-behinds (?<= (?<!
_NAMED_GROUP = re.compile(r"\(\?P?<(?![=!])([^>]+)>")
_NAME_OK = re.compile(r"^\w+$")

_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "integer": int,
    "long": int,
    "float": float,
}


def field_path(reference: str) -> tuple[str, ...]:
    """``[source][ip]`` / ``source.ip`` / ``ip`` -> ``("source", "ip")``."""
    ref = reference.strip()
    if ref.startswith("["):
        parts = [p for p in re.split(r"\]\[|\[|\]", ref) if p]
    else:
        parts = ref.split(".")
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Definition:
    """One ``NAME regex`` line of a pattern file."""

    name: str
    regex: str
    path: str
    line: int


@dataclass(frozen=True, slots=True)
class Capture:
    """Where a generated group name's value goes, and how it is converted."""

    path: tuple[str, ...]
    convert: Callable[[str], Any] | None


def read_pattern_file(path: Path) -> list[Definition]:
    """Parse one Logstash pattern file; a malformed line raises :class:`PatternError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PatternError(f"cannot read pattern file: {e}", path=str(path)) from e
    definitions = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, body = line.partition(" ")
        body = body.strip()
        if not _NAME_OK.match(name):
            raise PatternError("pattern name must be letters, digits and _", path=str(path), line=number,
                               pattern=name[:60])
        if not body:
            raise PatternError("pattern has a name but no regex", path=str(path), line=number, pattern=name)
        definitions.append(Definition(name, body, str(path), number))
    return definitions


class PatternLibrary:
    """All pattern definitions: pygrok's bundled ones, then ours (ours win on a name clash)."""

    def __init__(self, folders: Iterable[Path] = ()) -> None:
        self._definitions: dict[str, Definition] = {}
        self._captures: dict[str, Capture] = {}
        self._counter = 0
        for bundled in sorted(_BUNDLED_DIR.iterdir()):
            if bundled.is_file():
                for d in read_pattern_file(bundled):
                    self._definitions[d.name] = d
        self.folders = [Path(f) for f in folders]
        for folder in self.folders:
            if not folder.is_dir():
                raise PatternError("pattern folder does not exist", path=str(folder))
            for file in sorted(folder.glob("*.grok")):
                for d in read_pattern_file(file):
                    self._definitions[d.name] = d
        # Translated bodies: captures renamed to generated \w+ names (once per definition).
        self._translated = {name: self._translate(d.regex) for name, d in self._definitions.items()}

    def __contains__(self, name: str) -> bool:
        return name in self._definitions

    def _new_group(self, reference: str, type_name: str | None, *, where: str) -> str:
        convert = None
        if type_name:
            convert = _CONVERTERS.get(type_name)
            if convert is None:
                raise ValueError(f"unknown type {type_name!r} in {where} (use int or float)")
        self._counter += 1
        group = f"g{self._counter}"
        self._captures[group] = Capture(field_path(reference), convert)
        return group

    def _translate(self, body: str, where: str = "pattern") -> str:
        def reference(m: re.Match[str]) -> str:
            syntax, semantic, type_name = m.group(1), m.group(2), m.group(3)
            if semantic is None:
                return m.group(0)
            return "%{" + syntax + ":" + self._new_group(semantic, type_name, where=where) + "}"

        def named(m: re.Match[str]) -> str:
            return "(?P<" + self._new_group(m.group(1), None, where=where) + ">"

        return _NAMED_GROUP.sub(named, _REFERENCE.sub(reference, body))

    def compile(self, expression: str, *, origin: str) -> Grok:
        """Compile a grok expression; ``origin`` (``file:line``) is named in any error."""
        try:
            translated = self._translate(expression, where=origin)
        except ValueError as e:
            raise PatternError(str(e), path=origin) from e
        try:
            grok = pygrok.Grok(translated, custom_patterns={
                name: body for name, body in self._translated.items()
            })
        except KeyError as e:
            missing = e.args[0] if e.args else "?"
            raise PatternError(f"unknown pattern %{{{missing}}} in {self._who_uses(missing, expression)}",
                               path=origin, pattern=str(missing)) from e
        except regex.error as e:
            raise self._explain_regex_error(expression, origin, e) from e
        try:
            compiled: Any = re.compile(grok.regex_obj.pattern)
        except re.error:
            compiled = grok.regex_obj  # a construct only the regex module knows: keep pygrok's
        return Grok(expression, compiled, self._captures)

    def _who_uses(self, missing: str, expression: str) -> str:
        token = "%{" + missing
        for d in self._definitions.values():
            if token + "}" in d.regex or token + ":" in d.regex:
                return f"pattern {d.name} ({d.path}:{d.line})"
        return "the expression"

    def _explain_regex_error(self, expression: str, origin: str, error: Exception) -> PatternError:
        """Find which referenced definition is the broken one, to name its file and line."""
        seen: set[str] = set()
        todo = [m.group(1) for m in _REFERENCE.finditer(expression)]
        while todo:
            name = todo.pop()
            if name in seen or name not in self._definitions:
                continue
            seen.add(name)
            d = self._definitions[name]
            try:
                pygrok.Grok(self._translated[name], custom_patterns=self._translated)
            except regex.error as e:
                inner = [m.group(1) for m in _REFERENCE.finditer(d.regex)]
                if not any(self._broken(n) for n in inner):
                    return PatternError(f"invalid regex: {e}", path=d.path, line=d.line, pattern=d.name)
            todo.extend(m.group(1) for m in _REFERENCE.finditer(d.regex))
        return PatternError(f"invalid regex: {error}", path=origin)

    def _broken(self, name: str) -> bool:
        if name not in self._translated:
            return False
        try:
            pygrok.Grok(self._translated[name], custom_patterns=self._translated)
        except regex.error:
            return True
        return False


class Grok:
    """A compiled grok expression. ``match`` returns nested captures or ``None``.

    ``apply`` writes a match's captures into a document; it is generated once per expression as
    straight-line Python (one ``if`` per capture, the nesting spelled out), because this runs for
    every line and a generic loop over paths costs several times more.
    """

    __slots__ = ("expression", "_regex", "search", "apply")

    def __init__(self, expression: str, compiled: Any, captures: dict[str, Capture]) -> None:
        self.expression = expression
        self._regex = compiled
        self.search = compiled.search
        fields = [(name, captures[name].path, captures[name].convert)
                  for name in compiled.groupindex if name in captures]
        self.apply = _make_apply(fields)

    def match(self, text: str, pos: int = 0) -> dict[str, Any] | None:
        m = self.search(text, pos)
        if m is None:
            return None
        out: dict[str, Any] = {}
        self.apply(m, out)
        return out


def _convert(convert: Callable[[str], Any], value: str) -> Any:
    try:
        return convert(value)
    except ValueError:
        return value  # Logstash keeps the string when a conversion fails


def _make_apply(fields: list[tuple[str, tuple[str, ...], Callable[[str], Any] | None]]
                ) -> Callable[[Any, dict[str, Any]], None]:
    """Source of ``apply(m, doc)`` for these captures; empty captures are skipped."""
    lines = ["def apply(m, doc):", "    g = m.group"]
    env: dict[str, Any] = {"_convert": _convert}
    for i, (name, path, convert) in enumerate(fields):
        lines.append(f"    v = g({name!r})")
        lines.append("    if v:")
        if convert is not None:
            env[f"c{i}"] = convert
            lines.append(f"        v = _convert(c{i}, v)")
        target = "doc"
        for depth, part in enumerate(path[:-1]):
            node = f"n{depth}"
            lines.append(f"        {node} = {target}.get({part!r})")
            lines.append(f"        if type({node}) is not dict:")
            lines.append(f"            {node} = {target}[{part!r}] = {{}}")
            target = node
        lines.append(f"        {target}[{path[-1]!r}] = v")
    exec("\n".join(lines), env)  # noqa: S102 - generated from our own capture table only
    return env["apply"]  # type: ignore[no-any-return]


def default_pattern_folders() -> list[Path]:
    """``$AUDIT_INGEST_PATTERNS_DIR``, else the repository's ``patterns/``, else the installed copy."""
    env = os.environ.get("AUDIT_INGEST_PATTERNS_DIR")
    if env:
        return [Path(env)]
    repo = Path(__file__).resolve().parent.parent / "patterns"
    if repo.is_dir():
        return [repo]
    import sys

    return [Path(sys.prefix) / "share" / "audit-ingest" / "patterns"]
