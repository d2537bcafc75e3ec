#!/usr/bin/env python3
"""Writes dashboards/*.json, the two Grafana dashboards: edit the panels here and run
scripts/dashboards.py (tests/dashboards.rs then checks every expression against a real
Prometheus)."""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DS = {"type": "prometheus", "uid": "prometheus"}
def var_query(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": "var"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": multi, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}
def const(name, label, value):
    return {"name": name, "label": label, "type": "textbox", "query": str(value),
            "current": {"text": str(value), "value": str(value)}}
pid = [0]
def panel(kind, title, targets, x, y, w, h, unit="short", thresholds=None, desc="", extra=None, mappings=None):
    pid[0] += 1
    fc = {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]}}, "overrides": []}
    if mappings: fc["defaults"]["mappings"] = mappings
    if kind == "timeseries":
        fc["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                                    "thresholdsStyle": {"mode": "line+area" if thresholds else "off"}}
    p = {"id": pid[0], "type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": {"x": x, "y": y, "w": w, "h": h}, "fieldConfig": fc,
         "targets": [dict(t, refId=chr(65 + i), datasource=DS) for i, t in enumerate(targets)],
         "options": {}}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}, "tooltip": {"mode": "multi"}}
    if kind == "stat":
        p["options"] = {"colorMode": "background", "graphMode": "none", "reduceOptions": {"calcs": ["lastNotNull"]}}
    if extra: p.update(extra)
    return p
def t(expr, legend="", instant=False):
    d = {"expr": expr, "legendFormat": legend}
    if instant: d.update({"instant": True, "range": False, "format": "table"})
    return d
def row(title, y):
    pid[0] += 1
    return {"id": pid[0], "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}
def dashboard(uid, title, desc, templating, panels):
    return {"uid": uid, "title": title, "description": desc, "tags": ["strait", "kafka"], "timezone": "browser",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"}, "templating": {"list": templating},
            "annotations": {"list": []}, "panels": panels}
F = 'flow=~"$flow"'
FT = 'flow=~"$flow", topic=~"$topic"'
RED_AT = lambda v, amber=None: [{"color": "green", "value": None}] + ([{"color": "orange", "value": amber}] if amber is not None else []) + [{"color": "red", "value": v}]
updown = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}}]

rep_vars = [var_query("flow", "Flow", "label_values(strait_flow_up, flow)"),
            var_query("topic", "Topic", 'label_values(strait_records_replicated_total{flow=~"$flow"}, topic)'),
            const("lag_budget_seconds", "Lag budget (s)", 60)]
pid[0] = 0
rep_panels = [
    row("Health", 0),
    panel("stat", "Flow up", [t(f'max by (flow) (strait_flow_up{{{F}}})', "{{flow}}")], 0, 1, 6, 4, thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}], mappings=updown,
          desc="1 while the flow's pipeline runs; 0 while it restarts after an error or after it stopped."),
    panel("stat", "Lag vs budget", [t(f'max by (flow) (strait_replication_lag_seconds{{{F}}}) / $lag_budget_seconds', "{{flow}}")], 6, 1, 6, 4, unit="percentunit", thresholds=RED_AT(1, 0.5),
          desc="Largest lag in seconds of any topic, as a fraction of the lag budget (dashboard variable). Red: over budget."),
    panel("stat", "Records behind", [t(f'sum by (flow) (strait_replication_lag_records{{{F}}})', "{{flow}}")], 12, 1, 6, 4, thresholds=RED_AT(100000, 1000)),
    panel("stat", "Restarts (1h)", [t(f'sum by (flow) (increase(strait_flow_restarts_total{{{F}}}[1h])) or on() vector(0)', "{{flow}}")], 18, 1, 6, 4, thresholds=RED_AT(1),
          desc="Pipeline restarts after retriable errors (broker down, leader moving)."),
    row("Throughput", 5),
    panel("timeseries", "Records replicated / s", [t(f'sum by (flow, topic) (rate(strait_records_replicated_total{{{FT}}}[$__rate_interval]))', "{{flow}} {{topic}}")], 0, 6, 12, 8, unit="rps"),
    panel("timeseries", "Bytes replicated / s", [t(f'sum by (flow, topic) (rate(strait_bytes_replicated_total{{{FT}}}[$__rate_interval]))', "{{flow}} {{topic}}")], 12, 6, 12, 8, unit="Bps",
          desc="Key and value bytes of the copies the target acknowledged."),
    row("Lag", 14),
    panel("timeseries", "Lag (records)", [t(f'sum by (flow, topic) (strait_replication_lag_records{{{FT}}})', "{{flow}} {{topic}}")], 0, 15, 12, 8,
          desc="Source end offset (last stable offset) minus the replicated position, summed over partitions."),
    panel("timeseries", "Lag (seconds)", [t(f'max by (flow, topic) (strait_replication_lag_seconds{{{FT}}})', "{{flow}} {{topic}}")], 12, 15, 12, 8, unit="s", thresholds=RED_AT(60, 30),
          desc="Age of the oldest record not yet on the target; 0 when caught up. The line at 60 s is the default budget."),
    panel("table", "Top lagging partitions", [t(f'topk(10, strait_replication_lag_partition_records{{{FT}}})', instant=True)], 0, 23, 12, 8,
          desc="Needs http.per_partition_metrics = true (the default).",
          extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True}}}]}),
    panel("timeseries", "End-to-end latency", [
        t(f'histogram_quantile(0.5, sum by (le, flow) (rate(strait_replication_latency_seconds_bucket{{{F}}}[$__rate_interval])))', "p50 {{flow}}"),
        t(f'histogram_quantile(0.99, sum by (le, flow) (rate(strait_replication_latency_seconds_bucket{{{F}}}[$__rate_interval])))', "p99 {{flow}}")],
        12, 23, 12, 8, unit="s", thresholds=RED_AT(10, 1),
        desc="Target acknowledgement time minus the source record's timestamp, sampled once per round of delivery reports."),
    row("Errors and topics", 31),
    panel("timeseries", "Errors and retries / s", [
        t(f'sum by (code) (rate(strait_produce_errors_total[$__rate_interval])) or on() vector(0)', "produce {{code}}"),
        t(f'sum by (flow, code) (rate(strait_consume_errors_total{{{F}}}[$__rate_interval])) or on() vector(0)', "consume {{flow}} {{code}}"),
        t(f'sum by (flow) (rate(strait_produce_retries_total{{{F}}}[$__rate_interval]))', "produce retries {{flow}}")],
        0, 32, 12, 8, unit="rps", thresholds=RED_AT(0.01),
        desc="Errors by librdkafka error code, and produce requests librdkafka retried."),
    panel("timeseries", "Target topics created and config syncs", [
        t(f'sum by (flow) (strait_target_topics_created_total{{{F}}}) or on() vector(0)', "created {{flow}}"),
        t(f'sum by (flow) (strait_target_topic_config_syncs_total{{{F}}}) or on() vector(0)', "config syncs {{flow}}")],
        12, 32, 12, 8, desc="Totals since start. A config sync copies a changed data config (retention, cleanup policy, ...) from the source topic."),
]
rep = dashboard("strait-replication", "Strait: replication overview",
                "Throughput, lag in records and seconds, latency, errors and health of every Strait flow.", rep_vars, rep_panels)

pid[0] = 0
sync_vars = [var_query("flow", "Flow", "label_values(strait_flow_up, flow)")]
stages = ["mirror", "move_producers", "drain", "stop_consumers", "translate_offsets", "verify", "start_consumers", "done", "aborted"]
sync_panels = [
    row("Offset sync", 0),
    panel("timeseries", "Checkpoint age", [t(f'max by (flow) (strait_checkpoint_age_seconds{{{F}}})', "{{flow}}")], 0, 1, 12, 8, unit="s", thresholds=RED_AT(60, 15),
          desc="Time since the last completed checkpoint round. It grows if offset sync stalls."),
    panel("timeseries", "Translated and pending", [
        t(f'sum by (flow) (strait_groups_translated{{{F}}})', "groups {{flow}}"),
        t(f'sum by (flow) (strait_group_partitions_translated{{{F}}})', "partitions exact {{flow}}"),
        t(f'sum by (flow) (strait_group_offsets_pending{{{F}}})', "pending {{flow}}")], 12, 1, 12, 8,
        desc="Pending: the group committed beyond what replication has copied so far; it resolves as replication catches up."),
    panel("timeseries", "Group offset writes / s", [
        t(f'sum by (flow) (rate(strait_group_offset_writes_total{{{F}}}[$__rate_interval])) or on() vector(0)', "written {{flow}}"),
        t(f'sum by (flow, reason) (rate(strait_group_offset_writes_refused_total{{{F}}}[$__rate_interval])) or on() vector(0)', "refused {{flow}} {{reason}}")],
        0, 9, 12, 8, unit="rps",
        desc="Refused: the target group had active members (group_active) or is ahead of the translation (would_rewind)."),
    panel("timeseries", "Offset map segments", [t(f'sum by (flow) (strait_offset_map_segments{{{F}}})', "{{flow}}")], 12, 9, 12, 8,
          desc="Entries in the persisted offset map: one per offset gap, not per record."),
    row("Migration", 17),
    panel("state-timeline", "Migration stage", [t(f'max by (flow, stage) (strait_migration_stage{{{F}}}) > 0', "{{stage}}")], 0, 18, 16, 6,
          desc="The stage strait migrate run is in, over time."),
    panel("stat", "Verify", [t(f'max by (flow) (strait_migration_verify_ok{{{F}}})', "{{flow}}")], 16, 18, 8, 6,
          thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
          mappings=[{"type": "value", "options": {"0": {"text": "MISMATCH", "color": "red"}, "1": {"text": "OK", "color": "green"}}}],
          desc="Result of the migration's verify stage: every copied record compared with its source."),
]
sync = dashboard("strait-offset-sync", "Strait: offset sync and migration",
                 "Checkpoints, group offset translation and the staged migration.", sync_vars, sync_panels)
json.dump(rep, open(os.path.join(ROOT, "dashboards", "strait-replication.json"), "w"), indent=2)
json.dump(sync, open(os.path.join(ROOT, "dashboards", "strait-offset-sync.json"), "w"), indent=2)
