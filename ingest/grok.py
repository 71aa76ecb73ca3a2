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

from ingest.document import add_tag
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

    def definition(self, name: str) -> str | None:
        """The regex of pattern ``name`` as written in its file (None if there is no such pattern)."""
        d = self._definitions.get(name)
        return d.regex if d is not None else None

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
    straight-line Python (see :func:`make_writer`), because this runs for every line and a generic
    loop over paths costs several times more. :meth:`writer` makes the same with constant fields
    and tags added on a match (a rule's ``set`` and ``tags``), in one call.
    """

    __slots__ = ("expression", "_regex", "search", "apply", "_fields")

    @property
    def fields(self) -> list[tuple[int, tuple[str, ...], Callable[[str], Any] | None]]:
        """(group index, field path, conversion) of every capture, in group order."""
        return self._fields

    def __init__(self, expression: str, compiled: Any, captures: dict[str, Capture]) -> None:
        self.expression = expression
        self._regex = compiled
        self.search = compiled.search
        # in group order: where two groups write one field (IPv4 or IPv6 source), the later non-empty wins
        self._fields = [(index, captures[name].path, captures[name].convert)
                        for name, index in sorted(compiled.groupindex.items(), key=lambda item: item[1])
                        if name in captures]
        self.apply = make_writer(self._fields)

    def writer(self, constants: Iterable[tuple[tuple[str, ...], Any]] = (),
               tags: Iterable[str] = (), *,
               present: Iterable[tuple[str, ...]] | None = None) -> Callable[[Any, dict[str, Any]], None]:
        """``apply`` plus constant fields and tags, as one generated function; ``present``: see
        :func:`make_writer`."""
        return make_writer(self._fields, tuple(constants), tuple(tags), present=present)

    def match(self, text: str, pos: int = 0) -> dict[str, Any] | None:
        m = self.search(text, pos)
        if m is None:
            return None
        out: dict[str, Any] = {}
        self.apply(m, out)
        return out


_LITERAL_TYPES = (str, int, float, bool, type(None))


def _is_literal(value: Any) -> bool:
    """A value whose ``repr`` is Python source for an equal, fresh object."""
    if isinstance(value, _LITERAL_TYPES):
        return True
    if isinstance(value, list):
        return all(_is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_literal(v) for k, v in value.items())
    return False


class _Source:
    """Lines of a generated writer, with one local per parent object, found or made on first use.

    A parent resolved by straight-line code (a constant field, not under a capture's ``if``) is
    known to be held from there on: later writes into it skip the check."""

    def __init__(self, present: Iterable[tuple[str, ...]] | None = None) -> None:
        self.lines: list[str] = []
        self.parents: dict[tuple[str, ...], str] = {}
        self.held: set[tuple[str, ...]] = set()
        #: the objects the document may hold before the writer runs (None: any)
        self.existing = None if present is None else {p[:i] for p in present for i in range(1, len(p) + 1)}

    def parent(self, path: tuple[str, ...]) -> str:
        if not path:
            return "doc"
        if path not in self.parents:
            self.parents[path] = f"p{len(self.parents)}"
        return self.parents[path]

    def resolve(self, path: tuple[str, ...], indent: str, *, top: bool = False) -> None:
        """Code that makes sure the local for ``path`` holds the (created if needed) object there."""
        if not path or path in self.held:
            return
        var = self.parent(path)
        self.lines.append(f"{indent}if {var} is None:")
        self.resolve(path[:-1], indent + "    ")
        above = self.parent(path[:-1])
        key = path[-1]
        if self.existing is not None and path not in self.existing:  # only this writer makes it
            self.lines.append(f"{indent}    {var} = {above}[{key!r}] = {{}}")
        else:
            self.lines.append(f"{indent}    {var} = {above}.get({key!r})")
            self.lines.append(f"{indent}    if type({var}) is not dict:")
            self.lines.append(f"{indent}        {var} = {above}[{key!r}] = {{}}")
        if top:
            self.held.update(path[:i] for i in range(1, len(path) + 1))

    def assign(self, path: tuple[str, ...], value: str, indent: str, *, top: bool = False) -> None:
        self.resolve(path[:-1], indent, top=top)
        self.lines.append(f"{indent}{self.parent(path[:-1])}[{path[-1]!r}] = {value}")
        if path in self.parents:  # a scalar replaced an object some later write would reuse
            self.lines.append(f"{indent}{self.parents[path]} = None")
            self.held = {p for p in self.held if p[:len(path)] != path}

    def convert(self, path: tuple[str, ...], value: str, convert: str, indent: str) -> None:
        """``value`` converted, or as it is when the conversion fails (Logstash keeps the string)."""
        self.resolve(path[:-1], indent)
        target = f"{self.parent(path[:-1])}[{path[-1]!r}]"
        self.lines.append(f"{indent}try:")
        self.lines.append(f"{indent}    {target} = {convert}({value})")
        self.lines.append(f"{indent}except ValueError:")
        self.lines.append(f"{indent}    {target} = {value}")
        if path in self.parents:
            self.lines.append(f"{indent}{self.parents[path]} = None")
            self.held = {p for p in self.held if p[:len(path)] != path}


def make_writer(fields: list[tuple[int, tuple[str, ...], Callable[[str], Any] | None]],
                constants: tuple[tuple[tuple[str, ...], Any], ...] = (),
                tags: tuple[str, ...] = (), *,
                present: Iterable[tuple[str, ...]] | None = None) -> Callable[[Any, dict[str, Any]], None]:
    """Generate ``write(m, doc)``: the non-empty captures of ``m`` (group index, field path,
    conversion), then ``constants`` (path, value; lists and dicts are fresh per document), then
    ``tags``. One ``m.group(...)`` call fetches every capture; each parent object is looked up once.

    ``present``: every field path the document may hold when the writer runs (None: unknown). An
    object no such path goes through is made without looking for it first: the writer must then
    only be given documents that hold nothing else (a parser's fresh documents)."""
    src = _Source(present)
    env: dict[str, Any] = {"_add_tag": add_tag}
    body = src.lines
    if fields:
        names = [f"v{i}" for i in range(len(fields))]
        indices = ", ".join(str(index) for index, _, _ in fields)
        body.append(f"    {', '.join(names)}{',' if len(fields) == 1 else ''} = m.group({indices})"
                    if len(fields) > 1 else f"    v0 = m.group({indices})")
        for i, (_, path, convert) in enumerate(fields):
            body.append(f"    if v{i}:")
            if convert is not None:
                env[f"c{i}"] = convert
                src.convert(path, f"v{i}", f"c{i}", "        ")
            else:
                src.assign(path, f"v{i}", "        ")
    for i, (path, value) in enumerate(constants):
        if _is_literal(value):
            literal = repr(value)
        else:  # e.g. a TOML date: shared, never mutated by us
            env[f"k{i}"] = value
            literal = f"k{i}"
        src.assign(path, literal, "    ", top=True)
    for tag in tags:
        body.append(f"    _add_tag(doc, {tag!r})")
    head = ["def write(m, doc):"] + [f"    {var} = None" for var in src.parents.values()]
    code = "\n".join(head + (body or ["    pass"]))
    exec(code, env)  # noqa: S102 - generated from our own capture table and rule constants only
    return env["write"]  # type: ignore[no-any-return]


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
