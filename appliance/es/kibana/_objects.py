"""The saved objects, built from the index templates' field list so they cannot drift.

Every field an object names (a column, a sort key, a filter, a KQL clause, a Lens column's
``sourceField``) goes through :func:`_field`, which refuses a field that
:data:`appliance.es.templates.FIELDS` does not map, or maps with a type unfit for its use (a
``terms`` bucket on a ``text`` field, a sum over a ``keyword`` …). Ids are fixed strings, so a
second import overwrites the first instead of adding copies.

The objects have the shape Kibana 8.8+ exports (``coreMigrationVersion`` 8.8.0; Lens state in
the ``formBased`` datasource); a newer Kibana migrates them on import.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..templates import FIELDS

__all__ = ["DASHBOARD_TITLE", "DATA_VIEWS", "saved_objects"]

DASHBOARD_TITLE = "Lateral — east-west overview"

# id → (pattern, name). Per-dataset views scope Discover and Lens to one data stream family.
DATA_VIEWS: dict[str, tuple[str, str]] = {
    "lateral-all": ("logs-lateral.*", "Lateral: all datasets"),
    "lateral-alert": ("logs-lateral.alert-*", "Lateral: alerts"),
    "lateral-policy": ("logs-lateral.policy-*", "Lateral: policy findings"),
    "lateral-flow": ("logs-lateral.flow-*", "Lateral: flows"),
}

# What each use needs of a field's mapped type.
_USES: dict[str, frozenset[str]] = {
    "show": frozenset({"keyword", "ip", "long", "date", "boolean", "text", "flattened"}),
    "query": frozenset({"keyword", "ip", "long", "date", "boolean"}),
    "sort": frozenset({"keyword", "ip", "long", "date", "boolean"}),
    "terms": frozenset({"keyword", "ip", "long", "boolean"}),
    "date": frozenset({"date"}),
    "number": frozenset({"long"}),
}
_CORE = {"coreMigrationVersion": "8.8.0", "managed": False}
_RECORDS = "___records___"  # Lens's pseudo-field for count()


def _field(name: str, use: str) -> str:
    ftype = FIELDS.get(name)
    if ftype is None:
        raise ValueError(f"saved objects reference {name!r}, which the templates do not map")
    if ftype not in _USES[use]:
        raise ValueError(f"{name!r} is mapped as {ftype}, unfit for {use}")
    return name


def _kql(*clauses: tuple[str, str]) -> str:
    """``field:"value"`` clauses joined by ``and`` (value ``*``: the field exists)."""
    parts = []
    for name, value in clauses:
        _field(name, "query")
        parts.append(f"{name}:*" if value == "*" else f'{name}:"{value}"')
    return " and ".join(parts)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _data_view(view_id: str) -> dict[str, Any]:
    pattern, name = DATA_VIEWS[view_id]
    formats = {_field(f, "number"): {"id": "bytes"}
               for f in ("network.bytes", "source.bytes", "destination.bytes")}
    return {"id": view_id, "type": "index-pattern", "typeMigrationVersion": "8.0.0", **_CORE,
            "attributes": {"title": pattern, "name": name,
                           "timeFieldName": _field("@timestamp", "date"),
                           "allowNoIndex": True, "fields": "[]", "fieldAttrs": "{}",
                           "fieldFormatMap": _json(formats), "runtimeFieldMap": "{}",
                           "sourceFilters": "[]", "typeMeta": "{}"},
            "references": []}


def _phrase_filter(name: str, value: str, ref: str) -> dict[str, Any]:
    return {"meta": {"alias": None, "negate": False, "disabled": False, "type": "phrase",
                     "key": _field(name, "query"), "params": {"query": value},
                     "indexRefName": ref},
            "query": {"match_phrase": {name: value}}, "$state": {"store": "appState"}}


def _search(obj_id: str, title: str, view_id: str, columns: list[str], query: str,
            sort: list[tuple[str, str]], filters: list[tuple[str, str]] | None = None,
            description: str = "") -> dict[str, Any]:
    refs = [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
             "id": view_id}]
    built = []
    for k, (name, value) in enumerate(filters or []):
        ref = f"kibanaSavedObjectMeta.searchSourceJSON.filter[{k}].meta.index"
        built.append(_phrase_filter(name, value, ref))
        refs.append({"name": ref, "type": "index-pattern", "id": view_id})
    source = {"query": {"query": query, "language": "kuery"}, "filter": built,
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {"id": obj_id, "type": "search", "typeMigrationVersion": "8.0.0", **_CORE,
            "attributes": {"title": title, "description": description,
                           "columns": [_field(c, "show") for c in columns],
                           "sort": [[_field(f, "sort"), order] for f, order in sort],
                           "grid": {}, "hideChart": False, "isTextBasedQuery": False,
                           "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)}},
            "references": refs}


# -- Lens columns -------------------------------------------------------------------------

def _date_histogram() -> dict[str, Any]:
    return {"label": "@timestamp", "dataType": "date", "operationType": "date_histogram",
            "sourceField": _field("@timestamp", "date"), "isBucketed": True,
            "scale": "interval", "params": {"interval": "auto", "includeEmptyRows": True,
                                            "dropPartials": False}}


def _count(label: str) -> dict[str, Any]:
    return {"label": label, "customLabel": True, "dataType": "number",
            "operationType": "count", "sourceField": _RECORDS, "isBucketed": False,
            "scale": "ratio", "params": {"emptyAsNull": True}}


def _sum(name: str, label: str) -> dict[str, Any]:
    return {"label": label, "customLabel": True, "dataType": "number",
            "operationType": "sum", "sourceField": _field(name, "number"),
            "isBucketed": False, "scale": "ratio", "params": {"emptyAsNull": True}}


def _max(name: str, label: str) -> dict[str, Any]:
    return {"label": label, "customLabel": True, "dataType": "number",
            "operationType": "max", "sourceField": _field(name, "number"),
            "isBucketed": False, "scale": "ratio", "params": {"emptyAsNull": True}}


def _counter_rate(ref: str, label: str) -> dict[str, Any]:
    """Per second, from the max of a monotonic counter (Suricata's stats are cumulative)."""
    return {"label": label, "customLabel": True, "dataType": "number",
            "operationType": "counter_rate", "isBucketed": False, "scale": "ratio",
            "references": [ref], "timeScale": "s"}


def _terms(name: str, label: str, size: int, order_by: str) -> dict[str, Any]:
    ftype = FIELDS.get(_field(name, "terms"))
    return {"label": label, "customLabel": True,
            "dataType": {"keyword": "string", "ip": "ip", "long": "number",
                         "boolean": "boolean"}[str(ftype)],
            "operationType": "terms", "sourceField": name, "isBucketed": True,
            "scale": "ordinal",
            "params": {"size": size, "orderBy": {"type": "column", "columnId": order_by},
                       "orderDirection": "desc", "otherBucket": True, "missingBucket": False,
                       "parentFormat": {"id": "terms"}, "include": [], "exclude": [],
                       "includeIsRegex": False, "excludeIsRegex": False}}


def _lens(obj_id: str, title: str, view_id: str, vis_type: str, columns: dict[str, Any],
          visualization: dict[str, Any], query: str, description: str = "") -> dict[str, Any]:
    layer = "layer1"
    return {"id": obj_id, "type": "lens", "typeMigrationVersion": "8.6.0", **_CORE,
            "attributes": {
                "title": title, "description": description, "visualizationType": vis_type,
                "state": {
                    "datasourceStates": {"formBased": {"layers": {layer: {
                        "columns": columns, "columnOrder": list(columns),
                        "incompleteColumns": {}, "sampling": 1}}}},
                    "visualization": visualization,
                    "query": {"query": query, "language": "kuery"},
                    "filters": [], "internalReferences": [], "adHocDataViews": {}}},
            "references": [{"type": "index-pattern", "id": view_id,
                            "name": f"indexpattern-datasource-layer-{layer}"}]}


def _alerts_over_time() -> dict[str, Any]:
    cols = {"time": _date_histogram(), "alerts": _count("Alerts"),
            "rule": _terms("rule.name", "Signature", 10, "alerts")}
    vis = {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
           "fittingFunction": "None", "preferredSeriesType": "bar_stacked",
           "layers": [{"layerId": "layer1", "layerType": "data", "seriesType": "bar_stacked",
                       "xAccessor": "time", "accessors": ["alerts"], "splitAccessor": "rule",
                       "position": "top", "showGridlines": False}]}
    return _lens("lateral-lens-alerts-over-time", "Lateral: alerts over time by signature",
                 "lateral-alert", "lnsXY", cols, vis, _kql(("event.kind", "alert")),
                 "Suricata alerts per interval, split by rule.name (top 10).")


def _vm_pairs() -> dict[str, Any]:
    cols = {"src": _terms("lateral.src_vm.name", "Source VM", 20, "bytes"),
            "dst": _terms("lateral.dest_vm.name", "Destination VM", 10, "bytes"),
            "bytes": _sum("network.bytes", "Bytes"),
            "packets": _sum("network.packets", "Packets"),
            "flows": _count("Flows")}
    vis = {"layerId": "layer1", "layerType": "data",
           "columns": [{"columnId": c} for c in cols]}
    return _lens("lateral-lens-vm-pairs", "Lateral: top talking VM pairs", "lateral-flow",
                 "lnsDatatable", cols, vis,
                 _kql(("lateral.src_vm.name", "*"), ("lateral.dest_vm.name", "*")),
                 "Flows between VMs Lateral knows, by bytes (east-west communication matrix).")


def _policy_by_type() -> dict[str, Any]:
    cols = {"check": _terms("rule.category", "Check", 10, "findings"),
            "rule": _terms("rule.name", "Policy rule", 10, "findings"),
            "findings": _count("Findings")}
    vis = {"shape": "donut", "layers": [{
        "layerId": "layer1", "layerType": "data", "primaryGroups": ["check", "rule"],
        "metrics": ["findings"], "numberDisplay": "value", "categoryDisplay": "default",
        "legendDisplay": "default", "nestedLegend": False}]}
    return _lens("lateral-lens-policy-by-type", "Lateral: policy findings by type",
                 "lateral-policy", "lnsPie", cols, vis,
                 _kql(("event.dataset", "lateral.policy")),
                 "Inter-VM policy findings by check (segmentation …) and policy rule.")


def _appliance_health() -> dict[str, Any]:
    cols = {"time": _date_histogram(),
            "pkts": _max("suricata.eve.stats.decoder.pkts", "Packets decoded"),
            "records": _max("lateral.pipeline.records_in", "EVE records read"),
            "pps": _counter_rate("pkts", "Packets/s"),
            "rps": _counter_rate("records", "Records/s")}
    vis = {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
           "fittingFunction": "None", "preferredSeriesType": "line",
           "layers": [{"layerId": "layer1", "layerType": "data", "seriesType": "line",
                       "xAccessor": "time", "accessors": ["pps", "rps"],
                       "position": "top", "showGridlines": False}]}
    return _lens("lateral-lens-appliance-health", "Lateral: appliance throughput",
                 "lateral-all", "lnsXY", cols, vis, _kql(("event.dataset", "lateral.stats")),
                 "Packets Suricata decodes and EVE records Lateral reads, per second, from "
                 "the stats records (per appliance: split by observer.name to compare).")


def _searches() -> list[dict[str, Any]]:
    return [
        _search("lateral-search-alerts", "Lateral: alerts", "lateral-alert",
                ["rule.name", "event.severity", "source.ip", "lateral.src_vm.name",
                 "destination.ip", "destination.port", "lateral.dest_vm.name",
                 "network.protocol", "rule.id"],
                _kql(("event.dataset", "lateral.alert")),
                [("@timestamp", "desc")], filters=[("event.kind", "alert")],
                description="Suricata alerts between VMs, newest first."),
        _search("lateral-search-policy", "Lateral: policy findings", "lateral-policy",
                ["rule.category", "rule.name", "event.action", "lateral.src_vm.name",
                 "lateral.dest_vm.name", "destination.port", "network.transport", "message",
                 "suricata.eve.policy.count"],
                _kql(("event.dataset", "lateral.policy")),
                [("@timestamp", "desc")],
                description="Inter-VM policy findings (segmentation and other checks)."),
        _search("lateral-search-flows-by-vm", "Lateral: flows by VM", "lateral-flow",
                ["lateral.src_vm.name", "lateral.dest_vm.name", "source.ip", "destination.ip",
                 "destination.port", "network.transport", "network.protocol",
                 "network.bytes", "network.packets"],
                _kql(("event.dataset", "lateral.flow"), ("lateral.src_vm.name", "*")),
                [("lateral.src_vm.name", "asc"), ("@timestamp", "desc")],
                description="Flows from known VMs, grouped by source VM."),
    ]


def _dashboard(panels: list[tuple[dict[str, Any], int, int, int, int]]) -> dict[str, Any]:
    built, refs = [], []
    for k, (obj, x, y, w, h) in enumerate(panels, 1):
        pid = f"p{k}"
        built.append({"version": "8.8.0", "type": obj["type"], "panelIndex": pid,
                      "gridData": {"x": x, "y": y, "w": w, "h": h, "i": pid},
                      "embeddableConfig": {"enhancements": {}},
                      "panelRefName": f"panel_{pid}"})
        refs.append({"name": f"{pid}:panel_{pid}", "type": obj["type"], "id": obj["id"]})
    source = {"query": {"query": "", "language": "kuery"}, "filter": []}
    return {"id": "lateral-dashboard-overview", "type": "dashboard",
            "typeMigrationVersion": "8.7.0", **_CORE,
            "attributes": {"title": DASHBOARD_TITLE, "version": 1,
                           "description": "Alerts, policy findings and VM-to-VM traffic seen "
                                          "by Lateral's appliances.",
                           "panelsJSON": _json(built),
                           "optionsJSON": _json({"useMargins": True, "syncColors": False,
                                                 "syncCursor": True, "syncTooltips": False,
                                                 "hidePanelTitles": False}),
                           "timeRestore": True, "timeFrom": "now-24h", "timeTo": "now",
                           "refreshInterval": {"pause": False, "value": 60000},
                           "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)}},
            "references": refs}


def saved_objects() -> list[dict[str, Any]]:
    """Data views, saved searches, Lens visualisations and the dashboard, in import order."""
    views = [_data_view(v) for v in DATA_VIEWS]
    searches = _searches()
    over_time, pairs, policy = _alerts_over_time(), _vm_pairs(), _policy_by_type()
    health = _appliance_health()
    dashboard = _dashboard([(over_time, 0, 0, 32, 15), (policy, 32, 0, 16, 15),
                            (pairs, 0, 15, 48, 15), (searches[0], 0, 30, 48, 15),
                            (searches[1], 0, 45, 48, 15), (health, 0, 60, 48, 12)])
    return [*views, *searches, over_time, pairs, policy, health, dashboard]
