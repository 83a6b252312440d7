"""``report.html``: one self-contained page an evaluation writes beside ``report.md``.

No network and no CDN: inline CSS, the plots embedded as base64 PNG, the per-query data as inline JSON and a small
inline script that renders the per-query table (sortable by any column, by default by the change between two chosen
systems) and, for a clicked query, the top 10 of the chosen systems side by side with the judged labels.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

from ..io.outputs import pending_file

TOP = 10         # documents shown per system in the drill-down
SNIPPET = 240    # characters of a document's text shown


# The little markdown the notes use: `code`, <code>...</code>, **bold**, and what md_escape writes (backslash escapes
# and the entities &amp; &lt; &gt;); everything else is escaped.
_INLINE = re.compile(r"`([^`]+)`|(</?code>)|\\([!-/:-@\[-`{-~])|(&(?:amp|lt|gt);)|(\*\*)")


def _md(text: str) -> str:
    """The notes' markdown (see :data:`_INLINE`) as HTML: a name escaped by ``md_escape`` shows as it was."""
    out, pos, bold = [], 0, False
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, tag, escaped, entity = m.group(1, 2, 3, 4)
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif tag is not None or entity is not None:
            out.append(tag or entity)
        elif escaped is not None:
            out.append(html.escape(escaped))
        else:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
        pos = m.end()
    out.append(html.escape(text[pos:]) + ("</strong>" if bold else ""))
    return "".join(out)


def _number(cell: str) -> str:
    """A numeric sort key for a cell ('' when it is no number)."""
    try:
        return repr(float(cell.rstrip("%").replace("+", "")))
    except ValueError:
        return ""


def _natural(qid: str):
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


def drilldown(report, top: int = TOP, snippet: int = SNIPPET) -> dict | None:
    """The per-query data the page renders: each query's text, each system's primary metric and top ``top``
    documents (id, judged label or None, score), and the documents' texts (cut to ``snippet`` characters)."""
    cands = getattr(report, "candidates", None)
    if cands is None:
        return None
    primary = report.metrics[0]
    texts = {d: t for lst in cands.docs.values() for d, t in lst}
    shown: dict[str, str] = {}
    queries = []
    for q in sorted(cands.qrels, key=_natural):
        judged = cands.qrels.get(q, {})
        entry = {"id": q, "text": cands.queries.get(q, ""), "relevant": sum(1 for g in judged.values() if g > 0),
                 "m": [round(s.per_query[primary].get(q, 0.0), 4) for s in report.systems], "top": []}
        for s in report.systems:
            ranked = sorted(s.run.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:top]  # the metrics' tie-break
            entry["top"].append([[d, judged.get(d), round(float(v), 4)] for d, v in ranked])
            for d, _ in ranked:
                t = texts.get(d, "")
                shown[d] = t if len(t) <= snippet else t[:snippet].rsplit(" ", 1)[0] + " …"
        queries.append(entry)
    return {"metric": primary, "systems": [s.name for s in report.systems], "baseline": report.baseline,
            "queries": queries, "docs": shown}


def _finite(data):
    """``data`` with every non-finite number (NaN, infinity) as None: JSON has no NaN, and JSON.parse refuses it."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def _json_script(data) -> str:
    """Strict JSON (a non-finite number as null) safe inside a <script> element (no '<', '>' or '&' left to end it
    early)."""
    text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_html(report, head: list[str], rows: list[list[str]], notes: list[str], plots: list[Path]) -> str:
    """The page: the comparison table (``head``/``rows`` as in report.md), ``notes``, the ``plots`` embedded, the
    per-query drill-down and the versions."""
    e = html.escape
    src = report.dataset
    table = ["<div class='wide'><table class='sortable' id='summary'><thead><tr>"
             + "".join(f"<th title='sort'>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        table.append("<tr>" + "".join(f"<td data-v='{_number(c)}'>{e(c)}</td>" for c in r) + "</tr>")
    table.append("</tbody></table></div>")
    images = "".join(f"<figure><img alt='{e(p.stem)}' src='data:image/png;base64,"
                     f"{base64.b64encode(pending_file(p).read_bytes()).decode()}'><figcaption>{e(p.name)}</figcaption></figure>"
                     for p in plots)
    systems = "".join(f"<li><code>{e(s.name)}</code>: {e(s.kind)}" + (f", model <code>{e(str(s.model))}</code>"
                                                                      if s.model else "") + "</li>"
                      for s in report.systems)
    versions = ", ".join(f"{e(k)} {e(str(v))}" for k, v in (report.versions or {}).items() if v)
    data = drilldown(report)
    drill = ("<p>No per-query data in this report.</p>" if data is None else
             "<div class='controls'>Change = <select id='sysA'></select> − <select id='sysB'></select>"
             "<span class='sep'>Top 10 side by side:</span><span id='pick'></span></div>"
             "<p class='hint'>Click a column to sort, a query to see what each chosen system put on top "
             "(label: the judged grade; – unjudged, counted as not relevant). Link to a query: "
             "report.html#q=ID.</p>"
             "<div class='wide'><table class='sortable' id='perquery'><thead></thead><tbody></tbody></table></div>"
             f"<script type='application/json' id='data'>{_json_script(data)}</script><script>{_JS}</script>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>finerank evaluation: {e(Path(src.split(' + ')[0]).name)}</title><style>{_CSS}</style></head>
<body><main>
<h1>finerank evaluation</h1>
<p>Dataset <code>{e(src)}</code>: {report.queries} queries, {report.pairs} candidate pairs. Each system reranks the
same candidate lists; ir-measures scores them (unjudged = not relevant).</p>
<h2>Systems compared</h2>
{''.join(table)}
{''.join(f'<p>{_md(n)}</p>' for n in notes)}
<div class="plots">{images}</div>
<h2>Per query</h2>
<p id="status">{'' if data is None else f'{len(data["queries"])} queries'}</p>
{drill}
<h2>Systems</h2><ul>{systems}</ul>
<p class="versions">Versions: {versions}</p>
</main></body></html>
"""


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff;margin:0}
main{max-width:1400px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #d0d7de}
code{background:#f3f4f6;padding:0 3px;border-radius:3px;font-size:12px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:3px 8px;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;user-select:none;position:sticky;top:0;white-space:nowrap}
th.asc::after{content:" ▲"}th.desc::after{content:" ▼"}
#summary td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
#perquery td.num{text-align:right;font-variant-numeric:tabular-nums}
#perquery tr.q{cursor:pointer}#perquery tr.q:hover{background:#f6f8fa}#perquery tr.open{background:#eef4ff}
.pos{color:#1a7f37;font-weight:600}.neg{color:#cf222e;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots img{max-width:100%;border:1px solid #d0d7de}
figure{margin:0}figcaption{font-size:12px;color:#57606a}
.controls{margin:8px 0}.controls select{margin:0 4px}.sep{margin:0 8px 0 24px}.controls label{margin-right:10px}
.hint{color:#57606a;font-size:12px;margin:4px 0}
.side{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(300px,1fr))}
.side h3{font-size:14px;margin:4px 0}.side ol{margin:0;padding-left:22px}.side li{margin:3px 0}
.lab{display:inline-block;min-width:18px;text-align:center;border-radius:3px;font-size:11px;padding:0 3px;
margin-right:4px;background:#eaeef2;color:#57606a}.lab.rel{background:#1a7f37;color:#fff}
.did{font-size:11px;color:#57606a;margin-right:4px}.txt{font-size:12px}
.versions{color:#57606a;font-size:12px}.wide{overflow-x:auto}
"""

_JS = r"""
"use strict";
window.addEventListener("error", function (ev) { document.body.setAttribute("data-error", String(ev.message)); });
(function () {
  var D = JSON.parse(document.getElementById("data").textContent);
  var S = D.systems, Q = D.queries;
  var A = S.length - 1, B = Math.max(0, S.indexOf(D.baseline));
  var shown = {}; shown[A] = true; shown[B] = true;
  var sortCol = S.length + 3, sortDir = -1;  // the change, largest gain first
  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function num(x) { return typeof x === "number" && isFinite(x); }  // a metric may be null (was not finite)
  function f4(x) { return num(x) ? x.toFixed(4) : "–"; }
  function fmt(x) { return num(x) ? (x > 0 ? "+" : "") + x.toFixed(4) : "–"; }
  function change(q) { return num(q.m[A]) && num(q.m[B]) ? q.m[A] - q.m[B] : null; }
  function wanted(hash) {  // report.html#q=ID: the ID, percent-decoded where it decodes (#q=50%off does not)
    var m = /^#q=(.+)$/.exec(hash || "");
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (e) { return m[1]; }
  }
  function fill(sel, value) {
    S.forEach(function (name, i) { var o = el("option", null, name); o.value = i; sel.appendChild(o); });
    sel.value = value;
  }
  var selA = document.getElementById("sysA"), selB = document.getElementById("sysB");
  fill(selA, A); fill(selB, B);
  selA.onchange = function () { A = +selA.value; render(); };
  selB.onchange = function () { B = +selB.value; render(); };
  var pick = document.getElementById("pick");
  S.forEach(function (name, i) {
    var lab = el("label"), box = el("input");
    box.type = "checkbox"; box.checked = !!shown[i];
    box.onchange = function () { shown[i] = box.checked; render(); };
    lab.appendChild(box); lab.appendChild(document.createTextNode(" " + name)); pick.appendChild(lab);
  });
  var table = document.getElementById("perquery");
  function key(q, c) {
    if (c === 0) return isNaN(+q.id) ? q.id : +q.id;
    if (c === 1) return q.text.toLowerCase();
    if (c === 2) return q.relevant;
    var v = c < S.length + 3 ? q.m[c - 3] : change(q);
    return num(v) ? v : -Infinity;
  }
  function detail(q) {
    var tr = el("tr", "detail"), td = el("td"), grid = el("div", "side");
    td.colSpan = S.length + 4;
    S.forEach(function (name, i) {
      if (!shown[i]) return;
      var box = el("div"), ol = el("ol");
      box.appendChild(el("h3", null, name + " — " + D.metric + " " + f4(q.m[i])));
      q.top[i].forEach(function (hit) {
        var li = el("li"), g = hit[1];
        li.appendChild(el("span", "lab" + (g > 0 ? " rel" : ""), g === null ? "–" : g));
        li.appendChild(el("span", "did", hit[0]));
        li.appendChild(el("span", "txt", D.docs[hit[0]] || ""));
        ol.appendChild(li);
      });
      box.appendChild(ol); grid.appendChild(box);
    });
    td.appendChild(grid); tr.appendChild(td);
    return tr;
  }
  function render() {
    var thead = table.tHead, body = table.tBodies[0];
    thead.textContent = ""; body.textContent = "";
    var hr = el("tr");
    ["query", "text", "relevant"].concat(S, ["Δ " + S[A] + " − " + S[B]]).forEach(function (h, c) {
      var th = el("th", c === sortCol ? (sortDir > 0 ? "asc" : "desc") : "", c >= 3 && c < S.length + 3 ? h + " " + D.metric : h);
      th.title = "sort";
      th.onclick = function () { sortDir = c === sortCol ? -sortDir : (c < 3 ? 1 : -1); sortCol = c; render(); };
      hr.appendChild(th);
    });
    thead.appendChild(hr);
    var order = Q.slice().sort(function (x, y) {
      var a = key(x, sortCol), b = key(y, sortCol);
      return (a < b ? -1 : a > b ? 1 : 0) * sortDir;
    });
    order.forEach(function (q) {
      var tr = el("tr", "q" + (q.open ? " open" : ""));
      tr.appendChild(el("td", null, q.id));
      tr.appendChild(el("td", null, q.text));
      tr.appendChild(el("td", "num", q.relevant));
      q.m.forEach(function (v) { tr.appendChild(el("td", "num", f4(v))); });
      var d = change(q);
      tr.appendChild(el("td", "num " + (d > 1e-9 ? "pos" : d < -1e-9 ? "neg" : ""), fmt(d)));
      tr.onclick = function () { q.open = !q.open; render(); };
      body.appendChild(tr);
      if (q.open) body.appendChild(detail(q));
    });
  }
  function sortable(t) {  // the static summary table: numeric cells carry data-v
    var ths = t.tHead.rows[0].cells, dir = {};
    Array.prototype.forEach.call(ths, function (th, c) {
      th.onclick = function () {
        dir[c] = -(dir[c] || 1);
        var rows = Array.prototype.slice.call(t.tBodies[0].rows);
        rows.sort(function (x, y) {
          var a = x.cells[c].getAttribute("data-v"), b = y.cells[c].getAttribute("data-v");
          var u = a !== "" && b !== "" ? +a - +b : x.cells[c].textContent.localeCompare(y.cells[c].textContent);
          return u * dir[c];
        });
        rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
      };
    });
  }
  sortable(document.getElementById("summary"));
  var want = wanted(location.hash), raw = /^#q=(.+)$/.exec(location.hash || "");  // #q=ID opens that query
  Q.forEach(function (q) { if (want !== null && (q.id === want || q.id === raw[1])) q.open = true; });
  render();
  document.getElementById("status").textContent = Q.length + " queries; sorted by the change " + S[A] + " − " + S[B] + ".";
  document.body.setAttribute("data-ready", "1");
})();
"""
