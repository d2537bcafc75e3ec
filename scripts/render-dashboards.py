#!/usr/bin/python3
"""Draws each Grafana dashboard in dashboards/ as a PNG, from a real Prometheus: the same
PromQL Grafana would run (variables set to "All"), laid out by the panels' grid positions
and drawn with matplotlib. Grafana itself cannot be installed on the machines this runs
on; this shows what its panels would show.

usage: render-dashboards.py PROMETHEUS_URL START_UNIX END_UNIX OUT_DIR
(scripts/render-dashboards.sh produces the data and calls this.)
"""
import json
import os
import re
import sys
import urllib.parse
import urllib.request
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLORS = {"green": "#37872d", "orange": "#e0752d", "red": "#c4162a"}


def expand(expr, step):
    return (expr.replace("$__rate_interval", f"{max(4 * step, 15)}s")
            .replace("$lag_budget_seconds", "60")
            .replace("$flow", ".*")
            .replace("$topic", ".*"))


def api(prometheus, path, params):
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise RuntimeError(f"{params}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    if not fmt:
        # Grafana's default: the labels, minus the scrape's own.
        return ", ".join(f"{k}={v}" for k, v in metric.items()
                         if k not in ("__name__", "job", "instance")) or "value"
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    # Labels a series lacks (the `or vector(0)` fallback has none) show as nothing.
    return re.sub(r"\{\{[^}]*\}\}", "", out).strip() or "value"


def scale(unit):
    """Value multiplier and axis suffix for Grafana's unit names."""
    return {"percentunit": (100, "%"), "s": (1, "s"), "rps": (1, "/s"),
            "Bps": (1 / 1e6, "MB/s")}.get(unit, (1, ""))


def threshold_color(steps, value):
    color = "green"
    for s in steps:
        if s["value"] is None or value >= s["value"]:
            color = s["color"]
    return COLORS.get(color, color)


def draw(panel, ax, prometheus, start, end, step):
    defaults = panel["fieldConfig"]["defaults"]
    mult, suffix = scale(defaults.get("unit", ""))
    steps = defaults.get("thresholds", {}).get("steps", [])
    mappings = {}
    for m in defaults.get("mappings", []):
        for k, v in m.get("options", {}).items():
            mappings[float(k)] = v["text"]
    ax.set_title(panel["title"], fontsize=9, loc="left")
    kind = panel["type"]
    if kind in ("stat", "table"):
        rows = []
        for t in panel["targets"]:
            for r in api(prometheus, "/api/v1/query", {"query": expand(t["expr"], step), "time": end}):
                rows.append((legend(t.get("legendFormat"), r["metric"]), float(r["value"][1])))
        ax.axis("off")
        if kind == "table":
            rows.sort(key=lambda r: -r[1])
            text = "\n".join(f"{name:<60} {value:>10.0f}" for name, value in rows[:10])
            ax.text(0.01, 0.95, text or "no data", va="top", family="monospace", fontsize=7,
                    transform=ax.transAxes)
            return
        for i, (name, value) in enumerate(rows[:4]):
            shown = mappings.get(value, f"{value * mult:.3g}{suffix}")
            x = (i + 0.5) / max(len(rows[:4]), 1)
            ax.text(x, 0.45, shown, ha="center", va="center", fontsize=18, weight="bold",
                    color=threshold_color(steps, value), transform=ax.transAxes)
            ax.text(x, 0.1, name, ha="center", fontsize=7, transform=ax.transAxes)
        return
    for t in panel["targets"]:
        series = api(prometheus, "/api/v1/query_range",
                     {"query": expand(t["expr"], step), "start": start, "end": end, "step": step})
        for r in series:
            xs = [datetime.fromtimestamp(float(v[0])) for v in r["values"]]
            ys = [float(v[1]) * mult for v in r["values"]]
            name = legend(t.get("legendFormat"), r["metric"])
            if kind == "state-timeline":
                ax.fill_between(xs, 0, [1 if y > 0 else 0 for y in ys], step="post", alpha=0.7,
                                label=name)
            else:
                ax.plot(xs, ys, linewidth=1, label=name)
    if kind == "state-timeline":
        ax.set_yticks([])
    red = [s["value"] for s in steps if s["color"] == "red" and s["value"] is not None]
    if red and kind == "timeseries" and panel["fieldConfig"]["defaults"].get("custom", {}).get(
            "thresholdsStyle", {}).get("mode", "off") != "off":
        ax.axhline(red[0] * mult, color=COLORS["red"], linestyle="--", linewidth=0.8)
    ax.tick_params(labelsize=6)
    if suffix:
        ax.set_ylabel(suffix, fontsize=7)
    ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M:%S"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left")


def render(path, prometheus, start, end, out_dir):
    dashboard = json.load(open(path))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(18, height * 0.42))
    fig.suptitle(f'{dashboard["title"]}  ({datetime.fromtimestamp(start):%H:%M:%S} to '
                 f'{datetime.fromtimestamp(end):%H:%M:%S}, from Prometheus)', fontsize=11)
    step = max(int((end - start) / 300), 1)
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_axes([g["x"] / 24 + 0.02, 1 - (g["y"] + g["h"]) / height + 0.035,
                           g["w"] / 24 - 0.035, g["h"] / height - 0.07])
        draw(p, ax, prometheus, start, end, step)
    out = os.path.join(out_dir, f'{dashboard["uid"]}.png')
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main():
    prometheus, start, end, out_dir = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(ROOT, "dashboards"))):
        if name.endswith(".json"):
            render(os.path.join(ROOT, "dashboards", name), prometheus, start, end, out_dir)


if __name__ == "__main__":
    main()
