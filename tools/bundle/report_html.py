"""The fleet report as one self-contained HTML page: no server, nothing fetched.

Everything is inline: CSS, SVG charts drawn here in Python, and a few lines of script
that filter the table (the page reads fine without them). A Content-Security-Policy
forbids any load from outside the file, so the page behaves the same on an air-gapped
laptop, from a stick, as anywhere. Every string from the repository is escaped.

Shown: counts, the fleet table (the conditions and notes ``giter-bundle status``
prints) with rows coloured by what needs a look (diverged from the branch, behind,
not Ready, stale, refused, never reported), and per device a Ready/not-Ready timeline
and a chart per sensor (the reported value, and each report window's min-max band and
mean). Called by ``giter-bundle report``.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from giter_bundle.fleet_status import notes

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:")
W, H_TIMELINE, H_CHART, PAD = 640, 22, 170, 44

CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1d2430;
background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}
.sub{color:#5b6572;margin:0 0 1em}
.cards{display:flex;gap:.8em;flex-wrap:wrap;margin:1em 0}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:.5em 1em;min-width:7em}
.card b{display:block;font-size:1.6em}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border-bottom:1px solid #e5e9ee;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}
td.mono,td.nowrap{white-space:nowrap}.chart-title{margin:.8em 0 0}
td.mono,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
tr.ok td:first-child{border-left:4px solid #2e9d57}
tr.behind td:first-child{border-left:4px solid #d99a00}tr.behind{background:#fff8e6}
tr.notready td:first-child,tr.refused td:first-child,tr.stale td:first-child{
border-left:4px solid #c9372c}
tr.notready,tr.refused,tr.stale{background:#fdeeed}
tr.diverged td:first-child{border-left:4px solid #7a2fc2}tr.diverged{background:#f4ecfc}
tr.never{color:#7a838f}tr.never td:first-child{border-left:4px solid #aab2bd}
.tag{display:inline-block;border-radius:4px;padding:0 .4em;font-size:.85em;margin-right:.3em;
color:#fff}
.t-ok{background:#2e9d57}.t-behind{background:#d99a00}.t-notready,.t-refused,.t-stale{
background:#c9372c}.t-diverged{background:#7a2fc2}.t-never{background:#8792a0}
.tools{margin:.6em 0}.tools input[type=search]{padding:.3em .5em;width:18em}
details{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:.6em 0;padding:.4em .8em}
summary{cursor:pointer;font-weight:600}
svg{display:block;margin:.4em 0}svg text{font:11px system-ui,sans-serif;fill:#5b6572}
.legend span{margin-right:1em}
"""

SCRIPT = """
(function(){
  var q=document.getElementById('q'),p=document.getElementById('problems');
  var rows=Array.prototype.slice.call(document.querySelectorAll('#fleet tbody tr'));
  function apply(){
    var text=q.value.toLowerCase(),only=p.checked,shown=0;
    rows.forEach(function(r){
      var ok=(!text||r.textContent.toLowerCase().indexOf(text)>=0)&&
             (!only||!r.classList.contains('ok'));
      r.style.display=ok?'':'none';if(ok){shown++;}
    });
    document.getElementById('shown').textContent=shown+' of '+rows.length+' shown';
  }
  q.addEventListener('input',apply);p.addEventListener('change',apply);apply();
  document.body.setAttribute('data-ready','1');
})();
"""

# (class, label, what it means): the first that applies colours the row.
STATES = (
    ("diverged", "diverged", "observed a spec commit that is not on the branch"),
    ("refused", "refused", "refused a bundle (signature, rollback, fork)"),
    ("stale", "stale", "its spec has expired"),
    ("notready", "not Ready", "a resource is not Ready"),
    ("behind", "behind", "has not observed the newest spec commit"),
    ("never", "never reported", "no status on the hub yet"),
    ("ok", "in sync", "newest spec, every resource Ready"),
)


def row_state(row: dict[str, Any]) -> str:
    """The class of a table row: what most needs a look at this device."""
    if row["statusCommit"] is None:
        return "never"
    if not row["onBranch"]:
        return "diverged"
    if row["refused"]:
        return "refused"
    if row["stale"]:
        return "stale"
    if row["notReady"] or row["problems"] or row["invalid"]:
        return "notready"
    if row["behind"]:
        return "behind"
    return "ok"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _fmt(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"


def timeline(reports: list[dict[str, Any]], t0: float, t1: float, width: int = W) -> str:
    """One band per report, green when every resource was Ready, red when not."""
    if not reports:
        return ""
    span = max(t1 - t0, 1.0)
    x = [PAD + (r["t"] - t0) / span * (width - 2 * PAD) for r in reports]
    parts = [f'<svg width="{width}" height="{H_TIMELINE + 14}" role="img" '
             f'class="timeline" aria-label="Ready over time">']
    for i, r in enumerate(reports):
        end = x[i + 1] if i + 1 < len(reports) else width - PAD
        ok = r["ready"] == r["total"] and r["onBranch"]
        colour = "#2e9d57" if ok else ("#7a2fc2" if not r["onBranch"] else "#c9372c")
        tip = (f"{_time(r['t'])}: {r['ready']}/{r['total']} Ready, spec "
               f"{(r['spec'] or '')[:12]}" + ("" if r["onBranch"] else " (not on the branch)")
               + "".join(f"; {n}" for n in r["notReady"]))
        cls = "r-ok" if ok else "r-bad"
        parts.append(f'<rect x="{x[i]:.1f}" y="2" width="{max(end - x[i], 1.5):.1f}" '
                     f'height="{H_TIMELINE - 4}" fill="{colour}" class="{cls}">'
                     f"<title>{_e(tip)}</title></rect>")
    parts.append(f'<text x="{PAD}" y="{H_TIMELINE + 11}">{_e(_time(t0))}</text>')
    parts.append(f'<text x="{width - PAD}" y="{H_TIMELINE + 11}" text-anchor="end">'
                 f"{_e(_time(t1))}</text></svg>")
    return "".join(parts)


def chart(name: str, series: dict[str, Any], width: int = W) -> str:
    """A sensor's reported values over time: min-max band, mean line, value dots."""
    points = series["points"]
    if not points:
        return ""
    values = [v for p in points for v in (p["value"], p["min"], p["max"], p["mean"])
              if v is not None]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    margin = (hi - lo) * 0.08
    lo, hi = lo - margin, hi + margin
    t0, t1 = points[0]["t"], points[-1]["t"]
    span = max(t1 - t0, 1)
    inner_w, inner_h = width - 2 * PAD, H_CHART - 36

    def xy(t: float, v: float) -> tuple[float, float]:
        return PAD + (t - t0) / span * inner_w, 10 + (hi - v) / (hi - lo) * inner_h

    unit = series.get("unit") or ""
    out = [f'<svg width="{width}" height="{H_CHART}" role="img" class="chart" '
           f'aria-label="{_e(name)}">']
    for i in range(4):  # y grid and labels
        v = lo + (hi - lo) * i / 3
        _x, y = xy(t0, v)
        out.append(f'<line x1="{PAD}" x2="{width - PAD}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e5e9ee"/><text x="{PAD - 4}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{_e(_fmt(v))}</text>')
    band = [p for p in points if p["min"] is not None and p["max"] is not None]
    if band:
        upper = " ".join("{:.1f},{:.1f}".format(*xy(p["t"], p["max"])) for p in band)
        lower = " ".join("{:.1f},{:.1f}".format(*xy(p["t"], p["min"])) for p in reversed(band))
        out.append(f'<polygon points="{upper} {lower}" fill="#4c7fd1" fill-opacity="0.18" '
                   f'class="band"><title>min-max of each report window</title></polygon>')
    means = [p for p in points if p["mean"] is not None]
    if means:
        line = " ".join("{:.1f},{:.1f}".format(*xy(p["t"], p["mean"])) for p in means)
        out.append(f'<polyline points="{line}" fill="none" stroke="#2b5cab" '
                   f'stroke-width="1.6" class="mean"/>')
    for p in points:
        x, y = xy(p["t"], p["value"])
        window = ("" if p["min"] is None else
                  f" (window min {_fmt(p['min'])}, max {_fmt(p['max'])}, "
                  f"mean {_fmt(p['mean'] if p['mean'] is not None else p['value'])})")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#1d2430">'
                   f"<title>{_e(_time(p['t']))}: {_e(_fmt(p['value']))} {_e(unit)}"
                   f"{_e(window)}</title></circle>")
    out.append(f'<text x="{PAD}" y="{H_CHART - 6}">{_e(_time(t0))}</text>'
               f'<text x="{width - PAD}" y="{H_CHART - 6}" text-anchor="end">'
               f"{_e(_time(t1))}</text></svg>")
    title = (f'<p class="chart-title"><b>{_e(name)}</b>{f" ({_e(unit)})" if unit else ""}: '
             "reported value (dots), each report window's mean (line) and min-max (band)</p>")
    return title + "".join(out)


def _table(rows: list[dict[str, Any]]) -> str:
    labels = {cls: label for cls, label, _ in STATES}
    out = ['<table id="fleet"><thead><tr><th>Device</th><th>State</th><th>Groups</th>'
           "<th>Observed spec</th><th>Behind</th><th>Ready</th><th>Reported</th>"
           "<th>Notes</th></tr></thead><tbody>"]
    for row in rows:
        state = row_state(row)
        reported = row["statusCommit"] is not None
        total = len(row["ready"]) + len(row["notReady"])
        behind = "-" if row["behind"] is None else str(row["behind"])
        ready = f"{len(row['ready'])}/{total}" if reported else "-"
        out.append(
            f'<tr class="{state}" data-device="{_e(row["device"])}">'
            f'<td class="mono"><a href="#d-{_e(row["device"])}">{_e(row["device"])}</a></td>'
            f'<td><span class="tag t-{state}">{_e(labels[state])}</span></td>'
            f"<td>{_e(', '.join(row['groups']) or '-')}</td>"
            f'<td class="mono">{_e(row["observedSpec"][:12]) if reported else "-"}</td>'
            f"<td>{_e(behind)}</td>"
            f"<td>{_e(ready)}</td>"
            f"<td class=\"nowrap\">{_e(row['reportedAt'] or 'never')}</td>"
            f"<td>{_e(notes(row) or '-')}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _device(row: dict[str, Any], t0: float, t1: float) -> str:
    hist = row["history"]
    state = row_state(row)
    head = (f'<details id="d-{_e(row["device"])}" class="device {state}"'
            f'{" open" if state != "ok" else ""}><summary>{_e(row["device"])} '
            f'<span class="tag t-{state}">{_e(dict((c, lbl) for c, lbl, _ in STATES)[state])}'
            "</span></summary>")
    if not hist["reports"]:
        return head + "<p>No status on the hub yet.</p></details>"
    n = len(hist["reports"])
    parts = [head, f"<p>{n} report{'s' if n != 1 else ''}"
             + (" (older ones not shown)" if hist["truncated"] else "")
             + ". Ready over time (hover a band for the report):</p>",
             timeline(hist["reports"], t0, t1)]
    for name, series in hist["sensors"].items():
        parts.append(chart(name, series))
    parts.append("</details>")
    return "".join(parts)


def render_html(doc: dict[str, Any], generated: float) -> str:
    """The page for ``fleet_report``'s ``doc``; ``generated`` is a UNIX time."""
    rows = doc["devices"]
    counts = {cls: 0 for cls, _, _ in STATES}
    for row in rows:
        counts[row_state(row)] += 1
    times = [r["t"] for row in rows for r in row["history"]["reports"]]
    t0, t1 = (min(times), max(times)) if times else (generated, generated)
    cards = "".join(f'<div class="card"><b class="n-{cls}">{counts[cls]}</b>{_e(label)}</div>'
                    for cls, label, _ in STATES if counts[cls] or cls == "ok")
    legend = "".join(f'<span><span class="tag t-{cls}">{_e(label)}</span>{_e(what)}</span>'
                     for cls, label, what in STATES)
    # Raw text inside <script>: no "<" at all, so nothing can close the element early.
    data = json.dumps({"branch": doc["branch"], "tip": doc["tip"],
                       "counts": counts}).replace("<", "\\u003c")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>Fleet report: {_e(doc['branch'])} at {_e(doc['tip'][:12])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Fleet report</h1><p class=\"sub\">Spec branch <code>{_e(doc['branch'])}</code> "
        f"at <code>{_e(doc['tip'][:12])}</code> ({_e(doc['tipTime'])}); {len(rows)} devices; "
        f"made {_e(_time(generated))} UTC from the hub's status branches (each report "
        "verified against the device's enrolled key on import). Report times are the "
        "devices' own clocks.</p>",
        f'<div class="cards">{cards}</div>',
        f'<p class="legend">{legend}</p>',
        '<div class="tools"><input type="search" id="q" placeholder="filter devices, notes…" '
        'aria-label="filter"> <label><input type="checkbox" id="problems"> only devices that '
        'need a look</label> <span id="shown"></span></div>',
        _table(rows),
        "<h2>Devices over time</h2>",
        *(_device(row, t0, t1) for row in rows),
        f'<script type="application/json" id="report-data">{data}</script>',
        f"<script>{SCRIPT}</script></body></html>\n",
    ])
