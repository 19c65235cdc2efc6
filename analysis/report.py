"""A self-contained HTML report: figures embedded as base64 PNG, findings with intervals."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:90%}
td,th{border:1px solid #ccc;padding:2px 6px}li{margin:.2em 0}.note{color:#555}"""


def _img(path: str, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _items(lines: list[str]) -> str:
    if not lines:
        return "<p class='note'>nothing to report</p>"
    return "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in lines) + "</ul>"


def _table(frame: pd.DataFrame, max_rows: int = 60) -> str:
    if frame.empty:
        return "<p class='note'>empty</p>"
    return frame.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                        na_rep="n/a", border=0)


def write_report(path: str | Path, sections: list[dict], intro: list[str]) -> str:
    """Write the report; a section has a title, figures {name: png}, findings {heading:
    lines}, and optionally a table with a line of text introducing it."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ldm-scaling analysis"
             f"</title><style>{STYLE}</style></head><body><h1>ldm-scaling analysis</h1>",
             _items(intro)]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec['title'])}</h2>")
        for name, png in sec.get("figures", {}).items():
            parts.append(_img(png, name))
        for sub, lines in sec.get("findings", {}).items():
            parts.append(f"<h3>{html.escape(sub)}</h3>" + _items(lines))
        if sec.get("text"):  # introduces the table
            parts.append(f"<p class='note'>{html.escape(sec['text'])}</p>")
        if sec.get("table") is not None:
            parts.append(_table(sec["table"]))
    parts.append("</body></html>")
    p = Path(path)
    p.write_text("\n".join(parts))
    return str(p)
