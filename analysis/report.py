"""The report a researcher reads: one self-contained HTML file (figures embedded as data URIs, no
script, no network) that opens on the findings, and the same findings as Markdown.

A page is a dict: title, subtitle, claims (analysis.claims.check_claims), numbers (a table of
what the fits predict), sections ({id, title, intro, figures: [{png, caption}], side (a table shown
next to the figures), details: [{summary, table | lines, csv}]}), about (lines) and files.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.table import size_label

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;max-width:1180px;margin:0 auto;padding:.6em 1em;color:#222}
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0 0 .3em}nav{font-size:.9em;margin:.2em 0 .6em}nav a{margin-right:.9em}
table{border-collapse:collapse;font-size:.88em}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f4f4f4;text-align:left}#findings table{font-size:.82em;line-height:1.3;table-layout:fixed;width:100%}
#findings td.claim a{font-weight:600}
.v{display:inline-block;padding:1px 6px;border-radius:3px;font-weight:600;white-space:nowrap}
.reproduced{background:#d6f5d6;color:#155724}.contradicted{background:#f8d0d0;color:#721c24}
.unresolved{background:#fff0c2;color:#6b4e00}.why{color:#555;font-size:.9em}
figure{margin:.4em 0 1em}figure img{max-width:100%;border:1px solid #ddd}
figcaption{color:#333;font-size:.92em;margin-top:.2em}.row{display:flex;gap:1.2em;align-items:flex-start;flex-wrap:wrap}
.row figure{flex:1 1 560px}.side{flex:0 1 420px}details{margin:.4em 0}summary{cursor:pointer;color:#0645ad}
.note{color:#555}ul{margin:.3em 0}li{margin:.15em 0}
"""

VERDICT_CLASS = {"reproduced": "reproduced", "contradicted": "contradicted"}


def _e(text) -> str:
    return html.escape(str(text))


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3g}"
    return "" if v is None else str(v)


def table_html(frame: pd.DataFrame, max_rows: int = 200) -> str:
    """A plain HTML table with numbers to 4 significant figures; missing values blank."""
    if frame is None or frame.empty:
        return "<p class='note'>empty</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.head(max_rows).itertuples(index=False))
    more = f"<p class='note'>{len(frame) - max_rows} more rows in the CSV</p>" if len(frame) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _figure(fig: dict) -> str:
    data = base64.b64encode(Path(fig["png"]).read_bytes()).decode("ascii")
    return (f"<figure><img alt='{_e(fig['caption'])}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(fig['caption'])}</figcaption></figure>")


def verdict_badge(verdict: str) -> str:
    """The verdict as a coloured label."""
    return f"<span class='v {VERDICT_CLASS.get(verdict, 'unresolved')}'>{_e(verdict)}</span>"


def findings_html(claims: list[dict]) -> str:
    """The findings table: one row per claim of the paper this run includes."""
    if not claims:
        return "<p class='note'>no claim of the paper could be checked on this table</p>"
    rows = []
    for c in claims:
        why = f"<div class='why'>to resolve: {_e(c['resolve'])}</div>" if c.get("resolve") else ""
        if c.get("advice"):  # the planner's first-ranked next run (analysis/advice.py)
            why += f"<div class='why'>next run: {_e(c['advice'])}</div>"
        rows.append(f"<tr><td class='claim'><a href='#{_e(c['anchor'])}'>{_e(c['title'])}</a>: {_e(c['paper'])}</td>"
                    f"<td class='found'>{_e(c['found'])}</td><td>{verdict_badge(c['verdict'])}{why}</td></tr>")
    return ("<table><colgroup><col style='width:36%'><col style='width:48%'><col style='width:16%'></colgroup>"
            "<thead><tr><th>the paper's claim</th><th>this run found (95% interval)"
            "</th><th>verdict</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def interval_text(value, low, high) -> str:
    """'v [low, high]' to 4 significant figures, or 'v' when there is no interval."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    lo_hi = (low, high)
    if any(x is None or (isinstance(x, float) and not math.isfinite(x)) for x in lo_hi):
        return _fmt(float(value)) + " (no interval)"
    return f"{_fmt(float(value))} [{_fmt(float(low))}, {_fmt(float(high))}]"


def number_text(r: dict) -> str:
    """A number row (analysis.readable.number_row) as a reader wants it: value [95% interval], or why not given."""
    if not r["determined"]:
        return r["note"]
    aside = f" ({r['note']})" if r.get("note") else ""  # e.g. an interval ending on the search bound
    if r["unit"] == "params" and r["value"] is not None:  # sizes read as sizes: 3.86B, not 3.864e+09
        if not np.isfinite([r["low"], r["high"]]).all():
            return f"{size_label(r['value'])} (no interval)"
        return f"{size_label(r['value'])} [{size_label(r['low'])}, {size_label(r['high'])}]{aside}"
    return interval_text(r["value"], r["low"], r["high"]) + aside


def numbers_view(numbers: pd.DataFrame) -> pd.DataFrame:
    """The predictions as a reader wants them: what, value [95% interval], or why it is not given."""
    if numbers is None or numbers.empty:
        return numbers
    shown = [number_text(r) for r in numbers.to_dict("records")]
    return pd.DataFrame({"what the fits predict": numbers["what"],
                         "value [95% interval]": shown, "unit": numbers["unit"]})


def _details(d: dict) -> str:
    inner = table_html(d["table"]) if d.get("table") is not None else (
        "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in d.get("lines", [])) + "</ul>")
    csv = f" <span class='note'>({_e(Path(d['csv']).name)})</span>" if d.get("csv") else ""
    return f"<details><summary>{_e(d['summary'])}{csv}</summary>{inner}</details>"


def _section(sec: dict) -> str:
    parts = [f"<section id='{_e(sec['id'])}'><h2>{_e(sec['title'])}</h2>"]
    if sec.get("intro"):
        parts.append(f"<p>{_e(sec['intro'])}</p>")
    figs = "".join(_figure(f) for f in sec.get("figures", []))
    if sec.get("side") is not None:
        parts.append(f"<div class='row'>{figs}<div class='side'>{table_html(sec['side'])}</div></div>")
    else:
        parts.append(figs)
    if sec.get("lines"):
        parts.append("<ul>" + "".join(f"<li>{_e(s)}</li>" for s in sec["lines"]) + "</ul>")
    parts += [_details(d) for d in sec.get("details", [])]
    return "".join(parts) + "</section>"


def write_report(path: str | Path, page: dict) -> str:
    """Write the HTML report: the findings on the first screen, then a table of contents and the sections."""
    toc = [("findings", "Findings"), ("numbers", "Numbers")] + [(s["id"], s["title"]) for s in page["sections"]]
    toc.append(("about", "About this run"))
    nav = "<nav>" + "".join(f"<a href='#{_e(i)}'>{_e(t)}</a>" for i, t in toc) + "</nav>"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(page['title'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(page['title'])}</h1><p class='sub'>{_e(page['subtitle'])}</p>",
        f"<section id='findings'><h2>Findings</h2>{findings_html(page['claims'])}</section>{nav}",
        "<section id='numbers'><h2>Numbers</h2><p>What the fitted laws predict, with 95% intervals. "
        "A number the points do not pin down is marked, not printed.</p>"
        f"{table_html(numbers_view(page['numbers']))}</section>",
        *[_section(s) for s in page["sections"]],
        "<section id='about'><h2>About this run</h2><ul>"
        + "".join(f"<li>{_e(s)}</li>" for s in page["about"]) + "</ul>"
        + "<p>Files next to this report:</p><ul>"
        + "".join(f"<li>{_e(k)}: {_e(Path(v).name)}</li>" for k, v in page.get("files", {}).items())
        + "</ul></section></body></html>",
    ]
    p = Path(path)
    p.write_text("\n".join(parts), encoding="utf-8")
    return str(p)


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(page: dict, report_name: str = "report.html") -> str:
    """The findings and numbers as Markdown, for a README, a paper draft or a W&B report."""
    lines = [f"## {page['title']}: findings", "", page["subtitle"], "",
             "| experiment | the paper's claim | this run found (95% interval) | verdict |",
             "|---|---|---|---|"]
    for c in page["claims"]:
        v = f"**{c['verdict']}**" + (f" (to resolve: {c['resolve']})" if c.get("resolve") else "")
        v += f" (next run: {c['advice']})" if c.get("advice") else ""
        lines.append(f"| {_md_cell(c['title'])} | {_md_cell(c['paper'])} | {_md_cell(c['found'])} | {_md_cell(v)} |")
    nums = page["numbers"]
    if nums is not None and not nums.empty:
        lines += ["", "| what the fits predict | value [95% interval] |", "|---|---|"]
        for r in nums.to_dict("records"):
            lines.append(f"| {_md_cell(r['what'])} | {_md_cell(number_text(r))} |")
    lines += ["", f"Full report with figures: `{report_name}`.", ""]
    return "\n".join(lines)


def write_markdown(path: str | Path, page: dict) -> str:
    """Write findings.md next to the report."""
    p = Path(path)
    p.write_text(findings_markdown(page), encoding="utf-8")
    return str(p)
