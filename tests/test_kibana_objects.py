"""The Kibana saved objects in kibana/*.ndjson hold together and use fields that exist.

kibana/audit.ndjson is generated (ingest/setup/kibana_objects.py); tests/test_kibana_generated.py
checks that it is up to date and what the generator guarantees for other prefixes.

1. Every line is a saved object of the shape Kibana's import takes; every reference resolves.
2. Every field an object uses (search columns, sort and KQL, Lens columns and queries, map layers)
   is mapped in the index template (a field or a legacy alias).
3. Every such field appears in documents the pipeline produces from the sample logs
   (``audit-ingest parse``), so no panel is empty by construction.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.document import flatten
from ingest.setup.template import build_index_template, mapped_fields

ROOT = Path(__file__).resolve().parent.parent
KIBANA = ROOT / "kibana"
NDJSON = sorted(KIBANA.glob("*.ndjson"))

#: Saved object types we ship, with the attributes each must have.
REQUIRED_ATTRIBUTES = {
    "index-pattern": {"title", "timeFieldName", "name"},
    "search": {"title", "columns", "sort", "kibanaSavedObjectMeta"},
    "lens": {"title", "visualizationType", "state"},
    "map": {"title", "layerListJSON", "mapStateJSON"},
    "dashboard": {"title", "panelsJSON", "optionsJSON", "kibanaSavedObjectMeta"},
}
#: Attributes that Kibana exports as JSON *strings* (not objects).
STRING_JSON = {
    "search": ["kibanaSavedObjectMeta.searchSourceJSON"],
    "dashboard": ["kibanaSavedObjectMeta.searchSourceJSON", "optionsJSON", "panelsJSON"],
    "map": ["layerListJSON", "mapStateJSON", "uiStateJSON"],
    "index-pattern": ["fields", "fieldFormatMap", "runtimeFieldMap", "fieldAttrs", "sourceFilters"],
}
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
LENS_RECORDS = "___records___"  # Lens's pseudo-field for "count of documents"
MAP_SOURCE_ONLY = {"doc_count"}  # fields of a map layer's aggregation result, not of the index
ALERTS_DATA_VIEW_TITLE = "audit-alerts-*"
EVENTS_DATA_VIEW_TITLE = "audit-*,-audit-alerts-*"  # every daily index but the alerts


# --- loading ----------------------------------------------------------------------------------------
def load(path: Path) -> list[dict[str, Any]]:
    objects = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise AssertionError(f"{path.name}:{n}: not JSON: {e}") from e
        obj["_where"] = f"{path.name}:{n}"
        objects.append(obj)
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    assert NDJSON, "no kibana/*.ndjson"
    return [o for p in NDJSON for o in load(p)]


@pytest.fixture(scope="module")
def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["type"], o["id"]): o for o in objects}


def attr(obj: dict[str, Any], dotted: str) -> Any:
    cur: Any = obj["attributes"]
    for part in dotted.split("."):
        cur = cur[part]
    return cur


def decoded(obj: dict[str, Any], dotted: str) -> Any:
    value = attr(obj, dotted)
    return json.loads(value) if isinstance(value, str) else value


# --- field extraction -------------------------------------------------------------------------------
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"')
_KQL_FIELD = re.compile(r"(?<![\w.@*])([A-Za-z@_][\w.@]*)\s*(?::|<=|>=|<|>)")


def kql_fields(query: str) -> set[str]:
    """Field names in a KQL query (``a.b:x and c:(y or z)``); quoted values are ignored."""
    return set(_KQL_FIELD.findall(_QUOTED.sub('""', query)))


def _filter_fields(filters: list[dict[str, Any]]) -> set[str]:
    out = set()
    for f in filters:
        meta = f.get("meta", {})
        if meta.get("key"):
            out.add(meta["key"])
    return out


def _query_fields(q: dict[str, Any] | None) -> set[str]:
    if not q:
        return set()
    assert q.get("language") == "kuery", f"only KQL is checked: {q}"
    return kql_fields(q.get("query", ""))


def fields_used(obj: dict[str, Any]) -> set[str]:
    """Every index field ``obj`` refers to."""
    kind = obj["type"]
    out: set[str] = set()
    if kind == "index-pattern":
        out.add(attr(obj, "timeFieldName"))
    elif kind == "search":
        out |= set(attr(obj, "columns"))
        out |= {s[0] for s in attr(obj, "sort")}
        source = decoded(obj, "kibanaSavedObjectMeta.searchSourceJSON")
        out |= _query_fields(source.get("query")) | _filter_fields(source.get("filter", []))
    elif kind == "lens":
        state = attr(obj, "state")
        for layer in state["datasourceStates"]["formBased"]["layers"].values():
            for col in layer["columns"].values():
                if col.get("sourceField") and col["sourceField"] != LENS_RECORDS:
                    out.add(col["sourceField"])
        out |= _query_fields(state.get("query")) | _filter_fields(state.get("filters", []))
    elif kind == "map":
        for layer in decoded(obj, "layerListJSON"):
            src = layer.get("sourceDescriptor", {})
            for key in ("geoField", "termField"):
                if src.get(key):
                    out.add(src[key])
            for metric in src.get("metrics", []):
                if metric.get("field"):
                    out.add(metric["field"])
            out |= set(src.get("tooltipProperties", []))
            out |= _query_fields(layer.get("query"))
            for prop in layer.get("style", {}).get("properties", {}).values():
                field = (prop.get("options") or {}).get("field")
                if field and field.get("name") not in MAP_SOURCE_ONLY:
                    out.add(field["name"])
        state = decoded(obj, "mapStateJSON")
        out |= _query_fields(state.get("query")) | _filter_fields(state.get("filters", []))
    elif kind == "dashboard":
        source = decoded(obj, "kibanaSavedObjectMeta.searchSourceJSON")
        out |= _query_fields(source.get("query")) | _filter_fields(source.get("filter", []))
    return out


def data_view_titles(obj: dict[str, Any], by_key: dict[tuple[str, str], dict[str, Any]]) -> set[str]:
    return {
        by_key[("index-pattern", r["id"])]["attributes"]["title"]
        for r in obj["references"]
        if r["type"] == "index-pattern" and ("index-pattern", r["id"]) in by_key
    }


# --- 1. shape and references ------------------------------------------------------------------------
def test_ndjson_files_exist() -> None:
    assert NDJSON, "kibana/ holds no .ndjson"


def test_every_object_has_the_import_shape(objects: list[dict[str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for o in objects:
        where = o["_where"]
        assert o.get("type") in REQUIRED_ATTRIBUTES, f"{where}: type {o.get('type')}"
        assert isinstance(o.get("id"), str) and o["id"], where
        assert (o["type"], o["id"]) not in seen, f"{where}: duplicate {o['type']} {o['id']}"
        seen.add((o["type"], o["id"]))
        assert isinstance(o.get("attributes"), dict), where
        missing = REQUIRED_ATTRIBUTES[o["type"]] - set(o["attributes"])
        assert not missing, f"{where}: attributes missing {missing}"
        assert isinstance(o.get("references"), list), where
        for ref in o["references"]:
            assert set(ref) == {"id", "name", "type"}, f"{where}: reference {ref}"
        assert VERSION.match(o.get("coreMigrationVersion", "")), f"{where}: coreMigrationVersion"
        tmv = o.get("typeMigrationVersion") or (o.get("migrationVersion") or {}).get(o["type"])
        assert tmv and VERSION.match(tmv), f"{where}: typeMigrationVersion/migrationVersion"
        assert o.get("managed") is False, f"{where}: managed objects cannot be edited by users"
        for dotted in STRING_JSON.get(o["type"], []):
            try:
                value = attr(o, dotted)
            except KeyError:
                continue
            assert isinstance(value, str), f"{where}: {dotted} must be a JSON string, as Kibana exports it"
            json.loads(value)


def test_every_reference_resolves(objects: list[dict[str, Any]], by_key: dict[tuple[str, str], Any]) -> None:
    for o in objects:
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in by_key, f"{o['_where']}: {ref} not in kibana/*.ndjson"


def test_every_named_reference_is_declared(objects: list[dict[str, Any]]) -> None:
    """The names inside attributes (indexRefName, panelRefName, Lens layers, map layers) have a reference."""
    for o in objects:
        names = {r["name"] for r in o["references"]}
        where = o["_where"]
        if o["type"] == "search":
            ref = decoded(o, "kibanaSavedObjectMeta.searchSourceJSON")["indexRefName"]
            assert ref in names, f"{where}: {ref}"
        elif o["type"] == "lens":
            for layer_id in attr(o, "state")["datasourceStates"]["formBased"]["layers"]:
                assert f"indexpattern-datasource-layer-{layer_id}" in names, f"{where}: layer {layer_id}"
        elif o["type"] == "map":
            for layer in decoded(o, "layerListJSON"):
                ref = layer.get("sourceDescriptor", {}).get("indexPatternRefName")
                if ref:
                    assert ref in names, f"{where}: {ref}"
        elif o["type"] == "dashboard":
            panels = decoded(o, "panelsJSON")
            assert panels, f"{where}: no panels"
            for p in panels:
                assert p["panelIndex"] == p["gridData"]["i"], f"{where}: panel {p['panelIndex']}"
                assert f"{p['panelIndex']}:{p['panelRefName']}" in names, f"{where}: panel {p['panelIndex']}"
            refs_by_name = {r["name"]: r for r in o["references"]}
            for p in panels:
                assert refs_by_name[f"{p['panelIndex']}:{p['panelRefName']}"]["type"] == p["type"]


def test_lens_columns_are_consistent(objects: list[dict[str, Any]]) -> None:
    for o in (o for o in objects if o["type"] == "lens"):
        state = attr(o, "state")
        layers = state["datasourceStates"]["formBased"]["layers"]
        vis = state["visualization"]
        for layer in layers.values():
            assert sorted(layer["columnOrder"]) == sorted(layer["columns"]), o["_where"]
            for col_id, col in layer["columns"].items():
                order_by = col.get("params", {}).get("orderBy", {})
                if order_by.get("type") == "column":
                    assert order_by["columnId"] in layer["columns"], f"{o['_where']}: {col_id} orders by a missing column"
        used: set[str] = set()
        if o["attributes"]["visualizationType"] == "lnsXY":
            for layer in vis["layers"]:
                assert layer["layerId"] in layers
                used |= set(layer["accessors"]) | {layer.get("xAccessor"), layer.get("splitAccessor")} - {None}
        elif o["attributes"]["visualizationType"] == "lnsDatatable":
            assert vis["layerId"] in layers
            used |= {c["columnId"] for c in vis["columns"]}
        all_cols = {c for layer in layers.values() for c in layer["columns"]}
        assert used <= all_cols, f"{o['_where']}: visualization uses {used - all_cols}"


def test_the_required_objects_are_there(objects: list[dict[str, Any]], by_key: dict[tuple[str, str], Any]) -> None:
    views = {o["attributes"]["title"]: o for o in objects if o["type"] == "index-pattern"}
    assert views[EVENTS_DATA_VIEW_TITLE]["attributes"]["timeFieldName"] == "@timestamp"
    assert views[ALERTS_DATA_VIEW_TITLE]["attributes"]["timeFieldName"] == "@timestamp"
    titles = {o["attributes"]["title"] for o in objects}
    for title in (
        "SSH logins", "Failed logins by source", "sudo and su", "Commands run", "auditd executions",
        "VPN connections", "Closed sessions", "SSH Key Not Mapped logins", "Alerts",
        "Logins over time by outcome", "Top users (successful logins)", "Top failing source IPs",
        "Logins by country", "Login sources map", "Session durations per user",
    ):
        assert title in titles, title
    dashboards = [o for o in objects if o["type"] == "dashboard"]
    assert [d["attributes"]["title"] for d in dashboards] == ["Server access audit"]
    on_dashboard = {(r["type"], r["id"]) for r in dashboards[0]["references"]}
    # every search, lens and map is on the dashboard
    assert {k for k in by_key if k[0] in ("search", "lens", "map")} <= on_dashboard
    alerts_search = next(o for o in objects if o["type"] == "search" and o["attributes"]["title"] == "Alerts")
    assert data_view_titles(alerts_search, by_key) == {ALERTS_DATA_VIEW_TITLE}
    assert "type:alert" in decoded(alerts_search, "kibanaSavedObjectMeta.searchSourceJSON")["query"]["query"]
    geo = [o for o in objects if o["type"] == "map"]
    assert any("source.geo.location" in fields_used(m) for m in geo)


# --- 2. fields exist in the template ----------------------------------------------------------------
def test_kql_field_extraction() -> None:
    """The extractor itself: quoted values with colons are not fields; groups and ranges are."""
    q = 'event.action:(sudo_command or su) and system.auth.ssh.key.owner:"SSH Key Not Mapped" and x.y >= 3 and not z:"a:b"'
    assert kql_fields(q) == {"event.action", "system.auth.ssh.key.owner", "x.y", "z"}


def test_every_used_field_is_mapped(objects: list[dict[str, Any]]) -> None:
    mapped = mapped_fields(build_index_template()["template"]["mappings"])
    problems = []
    for o in objects:
        for field in sorted(fields_used(o)):
            if field not in mapped:
                problems.append(f"{o['_where']} {o['type']} {o['attributes'].get('title')!r}: {field}")
    assert not problems, "fields not in the index template:\n" + "\n".join(problems)


def test_unmapped_field_would_be_caught(objects: list[dict[str, Any]]) -> None:
    """The check above can fail: a search column that the template lacks is reported."""
    mapped = mapped_fields()
    obj = json.loads(json.dumps(next(o for o in objects if o["type"] == "search")))
    obj["attributes"]["columns"].append("system.auth.ssh.nonexistent")
    assert "system.auth.ssh.nonexistent" in fields_used(obj) - set(mapped)


# --- 3. fields appear in what the pipeline produces -------------------------------------------------
def _produced_docs() -> Iterator[dict[str, Any]]:
    if importlib.util.find_spec("ingest.cli") is None:
        pytest.skip("ingest.cli is not written yet: `audit-ingest parse` cannot run (integrator's part)")
    exe = Path(sys.executable).with_name("audit-ingest")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ingest.cli"]
    logs = sorted(str(p) for p in (ROOT / "examples" / "logs").glob("*.log"))
    proc = subprocess.run(
        [*cmd, "parse", "--config", str(ROOT / "examples" / "demo.toml"), *logs],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, f"audit-ingest parse failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    for n, line in enumerate(proc.stdout.splitlines(), start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise AssertionError(f"parse output line {n} is not JSON: {line[:120]}") from e


def present_fields(docs: list[dict[str, Any]]) -> set[str]:
    """Dotted paths with a value in any document, and every object path above them."""
    out: set[str] = set()
    for doc in docs:
        for path, value in flatten(doc).items():
            if value is None or value == [] or value == {}:
                continue
            parts = path.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def test_present_fields_helper() -> None:
    docs = [{"source": {"geo": {"location": {"lat": 1.0, "lon": 2.0}}, "ip": None}, "user": {"name": "a"}}]
    present = present_fields(docs)
    assert {"source.geo.location", "user.name"} <= present
    assert "source.ip" not in present


def test_every_used_field_is_produced(objects: list[dict[str, Any]], by_key: dict[tuple[str, str], Any]) -> None:
    docs = list(_produced_docs())
    assert docs, "audit-ingest parse produced no documents"
    present = present_fields(docs)
    problems = []
    for o in objects:  # alerts included: the samples trigger brute-force and unmapped-key alerts
        for field in sorted(fields_used(o) - present):
            problems.append(f"{o['_where']} {o['type']} {o['attributes'].get('title')!r}: {field}")
    assert not problems, "fields no sample document has:\n" + "\n".join(problems)


# --- 4. importing them (ingest.setup.kibana against tests/kibana_double.py) -------------------------
def test_import_all_objects_into_kibana_double() -> None:
    from ingest.setup.kibana import import_saved_objects, ndjson_files
    from tests.kibana_double import KibanaDouble

    with KibanaDouble(username="elastic", password="s3cret") as kb:
        result = import_saved_objects(kb.url, ndjson_files(KIBANA), username="elastic", password="s3cret")
        expected = sum(1 for p in NDJSON for line in p.read_text().splitlines() if line.strip())
        assert result.success and result.success_count == expected and not result.errors
        assert len(kb.objects()) == expected
        assert ("dashboard", "audit-dashboard-server-access") in kb.objects()
        (req,) = kb.requests
        assert req.method == "POST" and req.query["overwrite"] == ["true"]
        assert req.headers["kbn-xsrf"] == "true" and req.filename.endswith(".ndjson")
        # a second run overwrites instead of failing with conflicts
        again = import_saved_objects(kb.url, ndjson_files(KIBANA), username="elastic", password="s3cret")
        assert again.success and all(r.get("overwrite") for r in again.success_results)
