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
    without a generic path walk per field: this runs for every document. Each object on the way
    is looked up once, however many paths go through it."""
    lines = ["def write(doc):"]
    nodes: dict[tuple[str, ...], str] = {(): "doc"}

    def node(path: tuple[str, ...]) -> str:
        """A local holding the object at ``path`` (None if absent or not an object)."""
        if path not in nodes:
            above = node(path[:-1])
            name = nodes[path] = f"n{len(nodes)}"
            lines.append(f"    {name} = {above}.get({path[-1]!r}) if {above} is not None else None")
            lines.append(f"    if type({name}) is not dict:")
            lines.append(f"        {name} = None")
        return nodes[path]

    values: dict[str, list[str]] = {}
    for kind, kind_paths in paths.items():
        for path in kind_paths:
            holder = node(path[:-1])
            value = f"v{sum(len(v) for v in values.values())}"
            lines.append(f"    {value} = {holder}.get({path[-1]!r}) if {holder} is not None else None")
            values.setdefault(kind, []).append(value)
    lines.append("    found = {}")
    for number, (kind, kind_values) in enumerate(values.items()):
        out = f"r{number}"
        lines.append(f"    {out} = []")
        for value in kind_values:
            lines.append(f"    if {value} is not None and {value} != '' and {value} not in {out}:")
            lines.append(f"        {out}.append({value})")
        lines.append(f"    if {out}:")
        lines.append(f"        found[{kind!r}] = {out}")
    lines.append("    if found:")
    lines.append("        if 'related' not in doc:")
    lines.append("            doc['related'] = found")
    lines.append("        else:")
    lines.append("            for kind, kind_values in found.items():")
    lines.append("                _merge(doc, kind, kind_values)")
    env: dict[str, Any] = {"_merge": _merge_related}
    exec("\n".join(lines), env)  # noqa: S102 - generated from the parsers' own field lists
    return env["write"]  # type: ignore[no-any-return]


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
