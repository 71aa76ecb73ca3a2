"""The Kibana saved objects (data views, searches, Lens charts, map, dashboard), generated.

``audit-ingest setup`` imports what :func:`build_saved_objects` makes for the configured prefixes,
so the data views always cover the indices the worker writes: events ``<prefix>YYYY.MM.DD`` and
alerts ``<alert prefix>YYYY.MM.DD`` (``<prefix>alerts-`` unless ``detect.index_prefix`` says
otherwise). The events data view excludes the alert indices (``audit-*,-audit-alerts-*``): alerts
carry the fields of the event that raised them, and a search on events must not list each login a
second time as its alert.

``kibana/audit.ndjson`` is this module's output for the default prefix
(``audit-ingest setup --print-kibana > kibana/audit.ndjson``), for importing by hand in
Stack Management; a test checks that it is up to date. Field names are checked against the index
template as the objects are built (:mod:`ingest.setup.kibana_lens`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ingest.setup.kibana_lens import (
    Layer,
    datatable,
    eq,
    exists,
    field,
    kql,
    lens,
    saved_object,
    uid,
    xy,
)
from ingest.setup.template import DEFAULT_PREFIX, template_name

PANEL_VERSION = "8.8.0"
_SEARCH_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
_DURATION_FORMAT = {"event.duration": {"id": "duration",
                                       "params": {"inputFormat": "nanoseconds", "outputFormat": "humanizePrecise"}}}


@dataclass(frozen=True, slots=True)
class Targets:
    """The indices the objects look at, and the names derived from them."""

    prefix: str = DEFAULT_PREFIX
    alert_prefix: str = f"{DEFAULT_PREFIX}alerts-"

    @property
    def stem(self) -> str:
        return template_name(self.prefix).removesuffix("-ingest")

    @property
    def events_pattern(self) -> str:
        """Every daily index but the alerts (Elasticsearch's multi-target syntax, as Kibana passes it on)."""
        return f"{self.prefix}*,-{self.alert_prefix}*"

    @property
    def alerts_pattern(self) -> str:
        return f"{self.alert_prefix}*"

    def id(self, name: str) -> str:
        return f"{self.stem}-{name}"

    def title(self, title: str) -> str:
        """Titles name the prefix when it is not the default, so two installations can share a Kibana."""
        return title if self.prefix == DEFAULT_PREFIX else f"{title} ({self.prefix}*)"

    @property
    def events_view(self) -> str:
        return self.id("ingest-events")

    @property
    def alerts_view(self) -> str:
        return self.id("ingest-alerts")


def _json(value: Any) -> str:
    """Attributes Kibana keeps as JSON strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def data_views(t: Targets) -> list[dict[str, Any]]:
    def view(object_id: str, name: str, pattern: str, formats: dict[str, Any]) -> dict[str, Any]:
        attrs = {"allowNoIndex": True, "fieldAttrs": "{}", "fieldFormatMap": _json(formats), "fields": "[]",
                 "name": t.title(name), "runtimeFieldMap": "{}", "sourceFilters": "[]",
                 "timeFieldName": field("@timestamp"), "title": pattern, "typeMeta": "{}"}
        return saved_object("index-pattern", object_id, attrs, [], "8.0.0")

    return [view(t.events_view, "Audit events", t.events_pattern, _DURATION_FORMAT),
            view(t.alerts_view, "Audit alerts", t.alerts_pattern, {})]


#: (slug, title, description, columns, query, on the alerts data view)
_SEARCHES: list[tuple[str, str, str, list[str], dict[str, str], bool]] = [
    ("ssh-logins", "SSH logins", "Successful SSH logins with method and key owner.",
     ["host.hostname", "user.name", "source.ip", "source.geo.country_name", "system.auth.ssh.method",
      "system.auth.ssh.key.owner"],
     kql(eq("event.action", "ssh_login"), eq("event.outcome", "success")), False),
    ("failed-logins", "Failed logins by source", "Failed authentications: who was tried, from where.",
     ["source.ip", "source.geo.country_iso_code", "source.as.organization.name", "user.name", "host.hostname",
      "event.action"],
     kql(eq("event.category", "authentication"), eq("event.outcome", "failure")), False),
    ("sudo-su", "sudo and su", "Privilege changes: sudo commands (also refused ones) and su.",
     ["host.hostname", "user.name", "event.action", "event.outcome", "system.auth.sudo.user", "user.target.name",
      "system.auth.sudo.command", "system.auth.sudo.error"],
     kql(eq("event.action", "sudo_command", "su")), False),
    ("commands", "Commands run", "Every shell command from commands.log (bash PROMPT_COMMAND), with exit code.",
     ["host.hostname", "user.name", "process.pid", "process.command_line", "process.exit_code"],
     kql(eq("type", "commands")), False),
    ("auditd-exec", "auditd executions", "Programs executed as recorded by auditd (EXECVE/SYSCALL).",
     ["host.hostname", "user.audit.id", "auditd.log.record_type", "process.executable", "process.args",
      "process.title", "auditd.log.key"],
     kql(eq("type", "auditd"), eq("auditd.log.record_type", "EXECVE", "SYSCALL")), False),
    ("vpn", "VPN connections", "OpenVPN connects, address assignments, failures and disconnects.",
     ["host.hostname", "user.name", "event.action", "event.outcome", "source.ip", "source.geo.country_name",
      "openvpn.virtual_ip"],
     kql(eq("type", "openvpn")), False),
    ("sessions", "Closed sessions", "One document per closed SSH, VPN or Teleport session with its duration.",
     ["session.kind", "user.name", "host.hostname", "source.ip", "event.start", "event.end", "session.duration_min",
      "session.end_reason", "system.auth.ssh.key.owner"],
     kql(eq("type", "session")), False),
    ("key-not-mapped", "SSH Key Not Mapped logins",
     "Logins with a key that is in no configured authorized_keys file: find who it belongs to.",
     ["host.hostname", "user.name", "source.ip", "system.auth.ssh.key.type", "system.auth.ssh.key.fingerprint"],
     kql(eq("system.auth.ssh.key.owner", "SSH Key Not Mapped")), False),
    ("alerts", "Alerts", "Alerts raised by the detection rules.",
     ["rule.name", "event.severity", "event.reason", "user.name", "source.ip", "host.hostname"],
     kql(eq("type", "alert")), True),
]


def searches(t: Targets) -> list[dict[str, Any]]:
    out = []
    for slug, title, description, columns, query, on_alerts in _SEARCHES:
        source = {"filter": [], "indexRefName": _SEARCH_REF, "query": query}
        attrs = {"columns": [field(c) for c in columns], "description": description, "grid": {}, "hideChart": False,
                 "isTextBasedQuery": False, "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)},
                 "sort": [[field("@timestamp"), "desc"]], "title": t.title(title)}
        refs = [{"id": t.alerts_view if on_alerts else t.events_view, "name": _SEARCH_REF, "type": "index-pattern"}]
        out.append(saved_object("search", t.id(f"search-{slug}"), attrs, refs, "8.0.0"))
    return out


def lenses(t: Targets) -> list[dict[str, Any]]:
    auth = eq("event.category", "authentication")
    out = []

    oid = t.id("lens-logins-over-time")
    layer = Layer(oid)
    x = layer.date_histogram()
    split = layer.terms("event.outcome", "Outcome", size=3, order_by=uid(oid, "count"))
    y = layer.count("Logins")
    out.append(lens(oid, t.title("Logins over time by outcome"),
                    "Authentication events (SSH, su, PAM, VPN, Teleport) per interval, split by event.outcome.",
                    data_view=t.events_view, layer=layer, query=kql(auth, exists("event.outcome")),
                    visualization_type="lnsXY", visualization=xy(layer, x=x, y=y, split=split)))

    oid = t.id("lens-top-users")
    layer = Layer(oid)
    x = layer.terms("user.name", "User", size=10, order_by=uid(oid, "count"))
    y = layer.count("Logins")
    out.append(lens(oid, t.title("Top users (successful logins)"), "Users with the most successful logins.",
                    data_view=t.events_view, layer=layer, query=kql(auth, eq("event.outcome", "success")),
                    visualization_type="lnsXY",
                    visualization=xy(layer, x=x, y=y, series="bar_horizontal", legend=False)))

    # One row per source address: country and network are last values, not nested buckets, so an
    # address without GeoIP (private ones, or no database mounted) keeps its row.
    oid = t.id("lens-top-failing-sources")
    layer = Layer(oid)
    layer.terms("source.ip", "Source IP", size=20, order_by=uid(oid, "count"))
    layer.last_value("source.geo.country_name", "Country")
    layer.last_value("source.as.organization.name", "Network")
    layer.count("Failures")
    out.append(lens(oid, t.title("Top failing source IPs"),
                    "Source addresses with the most failed authentications, with the country and network owner "
                    "of the latest one (empty without GeoIP).",
                    data_view=t.events_view, layer=layer,
                    query=kql(auth, eq("event.outcome", "failure"), exists("source.ip")),
                    visualization_type="lnsDatatable", visualization=datatable(layer)))

    oid = t.id("lens-logins-by-country")
    layer = Layer(oid)
    x = layer.terms("source.geo.country_name", "Country", size=15, order_by=uid(oid, "count"))
    split = layer.terms("event.outcome", "Outcome", size=3, order_by=uid(oid, "count"))
    y = layer.count("Logins")
    out.append(lens(oid, t.title("Logins by country"),
                    "Authentication attempts by the country of the source address (GeoIP), split by outcome.",
                    data_view=t.events_view, layer=layer,
                    query=kql(auth, exists("source.geo.country_name"), exists("event.outcome")),
                    visualization_type="lnsXY",
                    visualization=xy(layer, x=x, y=y, split=split, series="bar_horizontal_stacked")))

    oid = t.id("lens-session-durations")
    layer = Layer(oid)
    layer.terms("user.name", "User", size=20, order_by=uid(oid, "sum:session.duration_min"))
    layer.count("Sessions")
    layer.metric("average", "session.duration_min", "Average minutes")
    layer.metric("max", "session.duration_min", "Longest (minutes)")
    layer.metric("sum", "session.duration_min", "Total minutes")
    out.append(lens(oid, t.title("Session durations per user"),
                    "Closed sessions (SSH, VPN, Teleport) per user: how many, average, longest and total minutes.",
                    data_view=t.events_view, layer=layer, query=kql(eq("type", "session")),
                    visualization_type="lnsDatatable", visualization=datatable(layer)))

    oid = t.id("lens-alerts-over-time")
    layer = Layer(oid)
    x = layer.date_histogram()
    split = layer.terms("rule.name", "Rule", size=10, order_by=uid(oid, "count"))
    y = layer.count("Alerts")
    out.append(lens(oid, t.title("Alerts over time by rule"),
                    f"Alerts raised by the detection rules ({t.alerts_pattern} indices).",
                    data_view=t.alerts_view, layer=layer, query=kql(eq("type", "alert"), exists("rule.name")),
                    visualization_type="lnsXY", visualization=xy(layer, x=x, y=y, split=split)))
    return out


def login_map(t: Targets) -> dict[str, Any]:
    oid = t.id("map-login-sources")
    ref = "layer_1_source_index_pattern"
    by_count = {"name": "doc_count", "origin": "source"}
    meta = {"isEnabled": True, "sigma": 3}
    base = {"alpha": 1, "id": uid(oid, "basemap"), "includeInFitToBounds": True, "label": None, "maxZoom": 24,
            "minZoom": 0, "sourceDescriptor": {"isAutoSelect": True, "lightModeDefault": "road_map_desaturated",
                                               "type": "EMS_TMS"},
            "style": {"type": "TILE"}, "type": "EMS_VECTOR_TILE", "visible": True}
    points = {
        "alpha": 0.8, "id": uid(oid, "sources"), "includeInFitToBounds": True, "joins": [], "label": "Login sources",
        "maxZoom": 24, "minZoom": 0, "query": kql(eq("event.category", "authentication")),
        "sourceDescriptor": {"applyForceRefresh": True, "applyGlobalQuery": True, "applyGlobalTime": True,
                             "geoField": field("source.geo.location"), "id": uid(oid, "grid"),
                             "indexPatternRefName": ref, "metrics": [{"type": "count"}], "requestType": "point",
                             "resolution": "COARSE", "type": "ES_GEO_GRID"},
        "style": {"isTimeAware": True, "type": "VECTOR", "properties": {
            "fillColor": {"type": "DYNAMIC", "options": {"color": "Yellow to Red", "field": by_count,
                                                         "fieldMetaOptions": meta, "type": "ORDINAL"}},
            "iconSize": {"type": "DYNAMIC", "options": {"field": by_count, "fieldMetaOptions": meta, "maxSize": 24,
                                                        "minSize": 6}},
            "lineColor": {"type": "STATIC", "options": {"color": "#3d3d3d"}},
            "lineWidth": {"type": "STATIC", "options": {"size": 1}},
            "symbolizeAs": {"options": {"value": "circle"}}}},
        "type": "GEOJSON_VECTOR", "visible": True}
    state = {"center": {"lat": 20, "lon": 0}, "filters": [], "query": {"language": "kuery", "query": ""},
             "refreshConfig": {"interval": 0, "isPaused": True}, "timeFilters": {"from": "now-24h", "to": "now"},
             "settings": {"autoFitToDataBounds": False, "initialLocation": "LAST_SAVED_LOCATION",
                          "showSpatialFilters": True}, "zoom": 1.4}
    attrs = {"description": "Where authentication attempts come from (GeoIP of source.ip), clustered.",
             "layerListJSON": _json([base, points]), "mapStateJSON": _json(state),
             "title": t.title("Login sources map"), "uiStateJSON": _json({"isLayerTOCOpen": True, "openTOCDetails": []})}
    return saved_object("map", oid, attrs, [{"id": t.events_view, "name": ref, "type": "index-pattern"}], "8.4.0")


#: Dashboard layout: (object id suffix, x, y, w, h) on Kibana's 48-column grid.
_LAYOUT = [
    ("lens-logins-over-time", 0, 0, 48, 12), ("lens-top-users", 0, 12, 16, 14),
    ("lens-top-failing-sources", 16, 12, 32, 14), ("map-login-sources", 0, 26, 24, 16),
    ("lens-logins-by-country", 24, 26, 24, 16), ("lens-session-durations", 0, 42, 24, 15),
    ("lens-alerts-over-time", 24, 42, 24, 15), ("search-alerts", 0, 57, 48, 12),
    ("search-ssh-logins", 0, 69, 24, 15), ("search-key-not-mapped", 24, 69, 24, 15),
    ("search-failed-logins", 0, 84, 24, 15), ("search-sudo-su", 24, 84, 24, 15),
    ("search-commands", 0, 99, 48, 15), ("search-sessions", 0, 114, 48, 15),
    ("search-vpn", 0, 129, 24, 15), ("search-auditd-exec", 24, 129, 24, 15),
]


def dashboard(t: Targets, objects: list[dict[str, Any]]) -> dict[str, Any]:
    oid = t.id("dashboard-server-access")
    kinds = {o["id"]: o["type"] for o in objects}
    panels, refs = [], []
    for suffix, x, y, w, h in _LAYOUT:
        target = t.id(suffix)
        panel = uid(oid, target)
        panels.append({"embeddableConfig": {"enhancements": {}}, "gridData": {"h": h, "i": panel, "w": w, "x": x, "y": y},
                       "panelIndex": panel, "panelRefName": f"panel_{panel}", "type": kinds[target],
                       "version": PANEL_VERSION})
        refs.append({"id": target, "name": f"{panel}:panel_{panel}", "type": kinds[target]})
    attrs = {"description": "Who logged into which server, from where, with which key, what they ran and for how long.",
             "kibanaSavedObjectMeta": {"searchSourceJSON": _json({"filter": [], "query": {"language": "kuery",
                                                                                           "query": ""}})},
             "optionsJSON": _json({"hidePanelTitles": False, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "useMargins": True}),
             "panelsJSON": _json(panels), "refreshInterval": {"pause": True, "value": 0}, "timeFrom": "now-24h",
             "timeRestore": True, "timeTo": "now", "title": t.title("Server access audit")}
    return saved_object("dashboard", oid, attrs, refs, "8.9.0")


def build_saved_objects(prefix: str = DEFAULT_PREFIX, alert_prefix: str | None = None) -> list[dict[str, Any]]:
    """Every saved object, in import order (data views first, the dashboard last)."""
    t = Targets(prefix, alert_prefix or f"{prefix}alerts-")
    objects = data_views(t) + searches(t) + lenses(t) + [login_map(t)]
    return objects + [dashboard(t, objects)]


def render_ndjson(objects: list[dict[str, Any]]) -> str:
    """One object per line, keys sorted: the same objects give the same bytes."""
    return "".join(json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n" for o in objects)
