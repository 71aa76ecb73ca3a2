"""The generated Kibana objects: the committed file is the generator's output, and the objects
show what the pipeline writes (every failing source, each login once), for any index prefix.

Documents come from `audit-ingest parse --bulk` on the sample logs (index names included); Kibana's
side is modelled where needed: Elasticsearch's multi-target index patterns (``a-*,-a-alerts-*``),
the subset of KQL the objects use (``and`` of ``field:value``, ``field:(a or b)``, ``field:*``),
and Lens's nested ``terms`` buckets, which leave out documents without the field unless the
column asks for a missing bucket.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest.document import flatten
from ingest.setup.kibana_lens import field
from ingest.setup.kibana_objects import build_saved_objects, render_ndjson

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "kibana" / "audit.ndjson"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("audit-ingest")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin"})


def test_committed_objects_are_the_generated_ones() -> None:
    """Item 9: kibana/audit.ndjson is `audit-ingest setup --print-kibana` for the default prefix."""
    printed = cli("setup", "--print-kibana")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == COMMITTED.read_text(), (
        "kibana/audit.ndjson is stale: run `.venv/bin/audit-ingest setup --print-kibana > kibana/audit.ndjson`")
    assert printed.stdout == render_ndjson(build_saved_objects())


def test_a_field_the_template_lacks_cannot_be_generated() -> None:
    assert field("source.ip") == "source.ip"
    with pytest.raises(ValueError, match="not a field of the index template"):
        field("source.geo.country")


def test_generation_is_stable_and_names_the_prefix() -> None:
    assert render_ndjson(build_saved_objects("corp-")) == render_ndjson(build_saved_objects("corp-"))
    objects = build_saved_objects("corp-")
    assert {o["id"].split("-")[0] for o in objects} == {"corp"}
    dashboard = next(o for o in objects if o["type"] == "dashboard")
    assert dashboard["attributes"]["title"] == "Server access audit (corp-*)"
    assert {r["id"] for r in dashboard["references"]} <= {o["id"] for o in objects}


# --- models of Kibana's side ---------------------------------------------------------------------------------
def pattern_matches(pattern: str, index: str) -> bool:
    """Elasticsearch's multi-target syntax: comma-separated globs, ``-glob`` excludes."""
    matched = False
    for part in pattern.split(","):
        if part.startswith("-"):
            matched = matched and not fnmatch.fnmatchcase(index, part[1:])
        else:
            matched = matched or fnmatch.fnmatchcase(index, part)
    return matched


_CLAUSE = re.compile(r'^([\w.@]+):(?:\*|"((?:\\.|[^"\\])*)"|\(([^)]*)\)|([\w.@-]+))$')


def kql_matches(query: str, doc: dict[str, Any]) -> bool:
    """The KQL the generated objects use: clauses joined by ``and``."""
    flat = flatten(doc)
    for clause in (query.split(" and ") if query else []):
        m = _CLAUSE.match(clause.strip())
        assert m, f"KQL beyond this model: {clause!r}"
        name, quoted, group, plain = m.groups()
        value = flat.get(name)
        values = value if isinstance(value, list) else [value]
        if quoted is None and group is None and plain is None:  # field:*
            wanted = None
        elif group is not None:
            wanted = {v.strip() for v in group.split(" or ")}
        else:
            wanted = {quoted if quoted is not None else plain}
        if value is None or (wanted is not None and not {str(v) for v in values} & wanted):
            return False
    return True


@pytest.fixture(scope="module")
def indexed() -> list[tuple[str, dict[str, Any]]]:
    """(index, document) of everything the worker would index from the sample logs."""
    logs = sorted(str(p) for p in (ROOT / "examples" / "logs").glob("*.log"))
    done = cli("parse", "--bulk", "--config", "examples/demo.toml", "--reference-time", "2020-12-31T00:00:00Z",
               *logs)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return [(next(iter(a.values()))["_index"], d) for a, d in zip(lines[::2], lines[1::2], strict=True)]


def by_id(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in objects}


def view_of(obj: dict[str, Any], objects: dict[str, dict[str, Any]]) -> str:
    (ref,) = [r for r in obj["references"] if r["type"] == "index-pattern"]
    return objects[ref["id"]]["attributes"]["title"]


def search_hits(obj: dict[str, Any], objects: dict[str, dict[str, Any]],
                indexed: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    pattern = view_of(obj, objects)
    query = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    return [d for index, d in indexed if pattern_matches(pattern, index) and kql_matches(query, d)]


def test_model_of_index_patterns() -> None:
    assert pattern_matches("audit-*", "audit-alerts-2024.05.17")
    assert not pattern_matches("audit-*,-audit-alerts-*", "audit-alerts-2024.05.17")
    assert pattern_matches("audit-*,-audit-alerts-*", "audit-2024.05.17")


@pytest.mark.parametrize("prefix", ["audit-", "corp-"])
def test_event_views_leave_alerts_out(prefix: str) -> None:
    """Items 7 and 3: every object on the events view sees the daily indices and not the alerts;
    the alert view sees the alert indices, for the configured prefix."""
    objects = by_id(build_saved_objects(prefix))
    for obj in objects.values():
        if obj["type"] in ("search", "lens", "map"):
            pattern = view_of(obj, objects)
            alerts = obj["attributes"]["title"].startswith(("Alerts", "Alerts over time"))
            assert pattern_matches(pattern, f"{prefix}alerts-2024.05.17") == alerts, obj["id"]
            assert pattern_matches(pattern, f"{prefix}2024.05.17") != alerts, obj["id"]


def test_each_unmapped_key_login_is_listed_once(indexed: list[tuple[str, dict[str, Any]]]) -> None:
    """Item 7: the alert for an unmapped key carries the key owner too; the search lists the logins."""
    objects = by_id(build_saved_objects())
    hits = search_hits(objects["audit-search-key-not-mapped"], objects, indexed)
    logins = [d for _, d in indexed if d.get("type") == "auth"
              and flatten(d).get("system.auth.ssh.key.owner") == "SSH Key Not Mapped"]
    alerts = [d for i, d in indexed if i.startswith("audit-alerts-") and d["rule"]["name"] == "unmapped_key"]
    assert len(logins) == 2 and len(alerts) == 2
    assert hits == logins
    alert_hits = search_hits(objects["audit-search-alerts"], objects, indexed)
    assert {d["rule"]["name"] for d in alert_hits} == {"unmapped_key", "brute_force"}


def lens_rows(obj: dict[str, Any], docs: list[dict[str, Any]]) -> set[Any]:
    """Values of the first bucket column that get a row: Lens nests the later terms buckets, and a
    document without a later bucket's field is in no row (unless that column has a missing bucket)."""
    (layer,) = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
    buckets = [layer["columns"][c] for c in layer["columnOrder"] if layer["columns"][c]["isBucketed"]]
    query = obj["attributes"]["state"]["query"]["query"]
    rows = set()
    for doc in docs:
        flat = flatten(doc)
        if not kql_matches(query, doc) or flat.get(buckets[0]["sourceField"]) is None:
            continue
        if all(c["params"].get("missingBucket") or flat.get(c["sourceField"]) is not None
               for c in buckets[1:] if c["operationType"] == "terms"):
            rows.add(flat[buckets[0]["sourceField"]])
    return rows


def test_top_failing_sources_keeps_addresses_without_geoip(indexed: list[tuple[str, dict[str, Any]]]) -> None:
    """Item 5: private addresses (no GeoIP) and addresses the database lacks keep their row."""
    objects = by_id(build_saved_objects())
    table = objects["audit-lens-top-failing-sources"]
    events = [d for i, d in indexed if pattern_matches(view_of(table, objects), i)]
    failing = {flatten(d)["source.ip"] for d in events if kql_matches(
        "event.category:authentication and event.outcome:failure and source.ip:*", d)}
    without_geo = {ip for ip in failing if not any(flatten(d).get("source.ip") == ip and
                                                   flatten(d).get("source.geo.country_name") for d in events)}
    assert without_geo, "the samples must hold failing sources without GeoIP for this test to mean anything"
    assert lens_rows(table, events) == failing


def test_no_lens_chart_drops_documents_in_a_nested_bucket() -> None:
    """Item 5, for every chart: a later terms bucket on a field its query does not require shows
    the documents without it (missing bucket), or the chart filters on the field explicitly."""
    for obj in build_saved_objects():
        if obj["type"] != "lens":
            continue
        (layer,) = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
        terms = [c for c in (layer["columns"][i] for i in layer["columnOrder"]) if c["operationType"] == "terms"]
        query = obj["attributes"]["state"]["query"]["query"]
        first_bucket = next(layer["columns"][i] for i in layer["columnOrder"] if layer["columns"][i]["isBucketed"])
        for column in terms:
            if column is first_bucket:
                continue
            assert column["params"]["missingBucket"] or f"{column['sourceField']}:*" in query, (
                f"{obj['attributes']['title']}: {column['sourceField']} drops documents without it")
