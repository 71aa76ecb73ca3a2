"""Helpers for the nested ECS documents that flow through the pipeline as plain dicts.

Documents are nested (``{"source": {"ip": ...}}``), as Elasticsearch stores them and Filebeat
sends them. Code addresses fields by dotted path (``"source.ip"``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_MISSING = object()


def get_path(doc: dict[str, Any], path: str, default: Any = None) -> Any:
    """Value at dotted ``path`` (``"source.geo.country_iso_code"``) or ``default``."""
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return default
        cur = cur.get(part, _MISSING)
        if cur is _MISSING:
            return default
    return cur


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at dotted ``path``, creating objects on the way (a scalar in the way is replaced)."""
    parts = path.split(".")
    cur = doc
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


def add_tag(doc: dict[str, Any], tag: str) -> None:
    """Append ``tag`` to ``doc["tags"]`` once."""
    tags = doc.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def add_related(doc: dict[str, Any], kind: str, value: Any) -> None:
    """Append to ``related.<kind>`` (``ip``, ``user``, ``hosts``) once, as ECS does."""
    if value is None or value == "":
        return
    related = doc.setdefault("related", {})
    values = related.setdefault(kind, [])
    if value not in values:
        values.append(value)


def _merge_related(doc: dict[str, Any], kind: str, values: list[Any]) -> None:
    related = doc.get("related")
    if related is None:
        doc["related"] = {kind: values}
        return
    present = related.get(kind)
    if present is None:
        related[kind] = values
        return
    for value in values:
        if value not in present:
            present.append(value)


def related_writer(paths: dict[str, tuple[tuple[str, ...], ...]]) -> Callable[[dict[str, Any]], None]:
    """Generate ``write(doc)``: for each ``related.<kind>`` the values at its field paths, as
    :func:`add_related` would add them one by one (once each, in path order, skipping empty ones),
    without a generic path walk per field: this runs for every document. The lookups are nested
    as the paths are (``user.target.name`` is only looked for when ``user`` is an object), so a
    document without the fields costs one ``get`` per top-level name."""
    leaves: list[tuple[tuple[str, ...], str]] = []  # (path, local) in path order, kind by kind
    locals_by_kind: dict[str, list[str]] = {}
    for kind, kind_paths in paths.items():
        for path in kind_paths:
            local = f"v{len(leaves)}"
            leaves.append((path, local))
            locals_by_kind.setdefault(kind, []).append(local)
    lines = ["def write(doc):"]
    if leaves:
        lines.append("    " + " = ".join(local for _, local in leaves) + " = None")
    _related_lookups(lines, leaves, (), "doc", "    ", [0])
    outs = []
    for number, (kind, kind_locals) in enumerate(locals_by_kind.items()):
        out = f"r{number}"
        outs.append((kind, out))
        lines.append(f"    {out} = None")
        for first, local in enumerate(kind_locals):
            lines.append(f"    if {local} is not None and {local} != '':")
            if first == 0:
                lines.append(f"        {out} = [{local}]")
                continue
            lines.append(f"        if {out} is None:")
            lines.append(f"            {out} = [{local}]")
            lines.append(f"        elif {local} not in {out}:")
            lines.append(f"            {out}.append({local})")
    lines.append("    found = None")
    for first, (kind, out) in enumerate(outs):
        lines.append(f"    if {out} is not None:")
        if first == 0:
            lines.append(f"        found = {{{kind!r}: {out}}}")
            continue
        lines.append("        if found is None:")
        lines.append(f"            found = {{{kind!r}: {out}}}")
        lines.append("        else:")
        lines.append(f"            found[{kind!r}] = {out}")
    lines.append("    if found is not None:")
    lines.append("        if 'related' not in doc:")
    lines.append("            doc['related'] = found")
    lines.append("        else:")
    lines.append("            for kind, kind_values in found.items():")
    lines.append("                _merge(doc, kind, kind_values)")
    env: dict[str, Any] = {"_merge": _merge_related}
    exec("\n".join(lines), env)  # noqa: S102 - generated from the parsers' own field lists
    return env["write"]  # type: ignore[no-any-return]


def _related_lookups(lines: list[str], leaves: list[tuple[tuple[str, ...], str]], prefix: tuple[str, ...],
                     holder: str, indent: str, counter: list[int]) -> None:
    """The lookups of the leaves under ``prefix`` (held in local ``holder``, an object), nested:
    the values directly in it, then each child object (in order of first use) in its own block."""
    depth = len(prefix)
    children: dict[str, None] = {}
    for path, local in leaves:
        if path[:depth] != prefix:
            continue
        if len(path) == depth + 1:
            lines.append(f"{indent}{local} = {holder}.get({path[-1]!r})")
        else:
            children.setdefault(path[depth])
    for name in children:
        counter[0] += 1
        node = f"n{counter[0]}"
        lines.append(f"{indent}{node} = {holder}.get({name!r})")
        lines.append(f"{indent}if type({node}) is dict:")
        _related_lookups(lines, leaves, (*prefix, name), node, indent + "    ", counter)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flat ``{"a.b": value}`` view of a nested document (for tests and field inventories)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


#: The times a document may carry: from the Unix epoch (no audit log is older: an earlier time is
#: a broken clock, such as Filebeat's zero time ``0001-01-01``) to the end of year 9999 in UTC (the
#: last with a four-digit year, which ISO 8601 ``@timestamp`` and the daily index names need).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 in UTC with microseconds and ``Z``, the form ``@timestamp`` always has.

    Raises ValueError for a time outside ``EARLIEST``..``LATEST`` (parsers then treat the time as
    unreadable: ``_dateparsefailure``), also where the conversion to UTC would overflow."""
    try:
        utc = ts.astimezone(UTC)
    except OverflowError as e:  # 9999-12-31T23:00-05:00 is in year 10000 in UTC
        raise ValueError(f"time out of range: {ts.isoformat()}") from e
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"time out of range: {ts.isoformat()}")
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str) -> datetime:
    """Inverse of :func:`format_timestamp` (also takes any ISO 8601 form with a zone)."""
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts
