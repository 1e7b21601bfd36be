"""A self-contained HTML report: text, tables and PNG figures embedded as base64 data URIs,
so the one file can be mailed or archived and opens offline (no scripts, no external links)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } p.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Section:
    heading: str
    text: str = ""
    table: list[dict] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)  # alt text -> PNG bytes


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(_cell(v) for v in row.values()) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(alt: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render(title: str, sections: list[Section], footer: str = "") -> str:
    parts = [f"<h1>{escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<section><h2>{escape(s.heading)}</h2>")
        if s.text:
            parts.append(f'<p class="note">{escape(s.text)}</p>')
        parts.append(_table(s.table))
        parts += [_figure(alt, png) for alt, png in s.figures.items()]
        parts.append("</section>")
    if footer:
        parts.append(f'<p class="note">{escape(footer)}</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
