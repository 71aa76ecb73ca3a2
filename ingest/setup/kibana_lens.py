"""Building blocks of the Kibana saved objects: field checks, KQL, Lens layers and charts.

Every field name an object uses goes through :func:`field`, which looks it up in the index
template (:func:`ingest.setup.template.mapped_fields`): the template is the one list of field names,
and a panel on a field the template does not map cannot be generated. The Lens ``dataType`` of a
column comes from the field's mapped type too.

Ids (of layers and columns) are UUIDs derived from the object id and a name, so the generated file
is the same on every run and an import over an older one replaces rather than duplicates.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any

from ingest.setup.template import mapped_fields

#: Namespace of the generated layer and column ids (uuid5 of "<object id>/<name>").
ID_NAMESPACE = uuid.UUID("5b8f3a56-6f1e-4b0e-9a43-2c5d1f0e7a11")
#: What Kibana writes into exported objects of 8.8+ (the import migrates them to the running version).
CORE_MIGRATION_VERSION = "8.8.0"
EXPORT_TIME = "2025-01-01T00:00:00.000Z"
LENS_RECORDS = "___records___"

_LENS_TYPE = {"keyword": "string", "match_only_text": "string", "ip": "ip", "date": "date", "long": "number",
              "integer": "number", "double": "number", "float": "number", "boolean": "boolean",
              "geo_point": "geo_point"}
_PLAIN_VALUE = re.compile(r"^[\w.@*-]+$")


def uid(*parts: str) -> str:
    """A stable UUID for ``parts`` (object id, then the name of a layer or column)."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


@functools.cache
def _mapped() -> dict[str, str]:
    return mapped_fields()


def field(name: str) -> str:
    """``name`` if the index template maps it, else ValueError (a panel on it would stay empty)."""
    if name not in _mapped():
        raise ValueError(f"{name} is not a field of the index template (ingest/setup/template.py)")
    return name


def lens_type(name: str) -> str:
    """Lens's ``dataType`` of a template field."""
    kind = _mapped()[field(name)]
    if kind not in _LENS_TYPE:
        raise ValueError(f"{name}: no Lens data type for a {kind} field")
    return _LENS_TYPE[kind]


# --- KQL ---------------------------------------------------------------------------------------------------
def _value(value: str) -> str:
    if value == "*" or _PLAIN_VALUE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def eq(name: str, *values: str) -> str:
    """``name:value`` or ``name:(a or b)``; values with spaces or KQL syntax are quoted."""
    if len(values) == 1:
        return f"{field(name)}:{_value(values[0])}"
    return f"{field(name)}:({' or '.join(_value(v) for v in values)})"


def exists(name: str) -> str:
    """``name:*``: the documents that have the field."""
    return f"{field(name)}:*"


def kql(*clauses: str) -> dict[str, str]:
    """The query object of a saved object: the clauses joined with ``and``."""
    return {"query": " and ".join(clauses), "language": "kuery"}


# --- saved object envelope ---------------------------------------------------------------------------------
def saved_object(kind: str, object_id: str, attributes: dict[str, Any], references: list[dict[str, str]],
                 type_version: str) -> dict[str, Any]:
    """A saved object as Kibana's export writes it (``managed: false``: users may edit it)."""
    return {"attributes": attributes, "coreMigrationVersion": CORE_MIGRATION_VERSION, "created_at": EXPORT_TIME,
            "id": object_id, "managed": False, "references": references, "type": kind,
            "typeMigrationVersion": type_version, "updated_at": EXPORT_TIME}


# --- Lens --------------------------------------------------------------------------------------------------
class Layer:
    """One Lens form-based layer: columns in the order they are added."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        self.id = uid(object_id, "layer")
        self.columns: dict[str, dict[str, Any]] = {}

    def _add(self, name: str, column: dict[str, Any]) -> str:
        column_id = uid(self.object_id, name)
        self.columns[column_id] = column
        return column_id

    def date_histogram(self, name: str = "@timestamp") -> str:
        return self._add(name, {"dataType": "date", "isBucketed": True, "label": name,
                                "operationType": "date_histogram", "scale": "interval", "sourceField": field(name),
                                "params": {"dropPartials": False, "includeEmptyRows": True, "interval": "auto"}})

    def terms(self, name: str, label: str, *, size: int, order_by: str, missing_bucket: bool = False) -> str:
        """Top ``size`` values; ``missing_bucket`` keeps the documents without the field as a row."""
        return self._add(name, {
            "customLabel": True, "dataType": lens_type(name), "isBucketed": True, "label": label,
            "operationType": "terms", "scale": "ordinal", "sourceField": field(name),
            "params": {"missingBucket": missing_bucket, "orderBy": {"columnId": order_by, "type": "column"},
                       "orderDirection": "desc", "otherBucket": True, "parentFormat": {"id": "terms"},
                       "size": size}})

    def count(self, label: str) -> str:
        return self._add("count", {"customLabel": True, "dataType": "number", "isBucketed": False, "label": label,
                                   "operationType": "count", "params": {"emptyAsNull": True}, "scale": "ratio",
                                   "sourceField": LENS_RECORDS})

    def metric(self, operation: str, name: str, label: str, decimals: int = 1) -> str:
        """``sum``, ``max``, ``average``... of a numeric field."""
        if lens_type(name) != "number":
            raise ValueError(f"{name} is not numeric: no {operation}")
        return self._add(f"{operation}:{name}", {
            "customLabel": True, "dataType": "number", "isBucketed": False, "label": label,
            "operationType": operation, "scale": "ratio", "sourceField": name,
            "params": {"emptyAsNull": True, "format": {"id": "number", "params": {"decimals": decimals}}}})

    def last_value(self, name: str, label: str) -> str:
        """The field's value in the newest document of the row: a metric, so a row never disappears
        because the field is missing (unlike a nested ``terms`` bucket), it shows empty instead."""
        kind = lens_type(name)
        return self._add(f"last_value:{name}", {
            "customLabel": True, "dataType": kind, "isBucketed": False, "label": label,
            "operationType": "last_value", "scale": "ratio" if kind == "number" else "ordinal",
            "sourceField": name, "filter": {"language": "kuery", "query": f"{name}: *"},
            "params": {"showArrayValues": True, "sortField": "@timestamp"}})

    def state(self) -> dict[str, Any]:
        return {"columnOrder": list(self.columns), "columns": self.columns, "incompleteColumns": {}}


_XY_VISIBLE = {"x": True, "yLeft": True, "yRight": True}


def xy(layer: Layer, *, x: str, y: str, split: str | None = None, series: str = "bar_stacked",
       legend: bool = True) -> dict[str, Any]:
    """The ``visualization`` of a bar chart (``lnsXY``)."""
    layer_spec: dict[str, Any] = {"accessors": [y], "layerId": layer.id, "layerType": "data", "seriesType": series,
                                  "xAccessor": x}
    if split is not None:
        layer_spec["splitAccessor"] = split
    return {"axisTitlesVisibilitySettings": _XY_VISIBLE, "fittingFunction": "None",
            "gridlinesVisibilitySettings": _XY_VISIBLE, "layers": [layer_spec],
            "legend": {"isVisible": legend, "position": "right"}, "preferredSeriesType": series,
            "tickLabelsVisibilitySettings": _XY_VISIBLE, "valueLabels": "hide"}


def datatable(layer: Layer) -> dict[str, Any]:
    """The ``visualization`` of a table (``lnsDatatable``): every column of the layer, in order."""
    return {"columns": [{"columnId": c, "isTransposed": False} for c in layer.columns], "layerId": layer.id,
            "layerType": "data"}


def lens(object_id: str, title: str, description: str, *, data_view: str, layer: Layer, query: dict[str, str],
         visualization_type: str, visualization: dict[str, Any]) -> dict[str, Any]:
    """A Lens saved object with one layer on ``data_view``."""
    state = {"adHocDataViews": {}, "datasourceStates": {"formBased": {"layers": {layer.id: layer.state()}}},
             "filters": [], "internalReferences": [], "query": {"language": query["language"], "query": query["query"]},
             "visualization": visualization}
    refs = [{"id": data_view, "name": f"indexpattern-datasource-layer-{layer.id}", "type": "index-pattern"}]
    return saved_object("lens", object_id, {"description": description, "state": state, "title": title,
                                            "visualizationType": visualization_type}, refs, "8.9.0")
