"""A small document model rendered twice: Markdown (figures as files next to it) and one
self-contained HTML page (figures embedded as base64 PNG, no external resources).

The study report is built once as a list of sections of blocks (paragraphs, bullet lists,
tables, figures) and written by :meth:`Document.write`; nothing here knows about studies.
Text is plain: the only inline markup is ```code``` in backticks, escaped for HTML.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CODE = re.compile(r"`([^`]+)`")


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: Path
    """a PNG file"""
    caption: str
    width: str = "100%"
    """display width in the HTML page (CSS)"""


@dataclass
class Verdict:
    """A highlighted claim line: what the paper says, what was measured, whether it holds."""

    claim: str
    paper: str
    measured: str
    holds: bool | None
    """None: could not be checked in this study (the line says why)"""
    criterion: str = ""

    @property
    def mark(self) -> str:
        return {True: "holds", False: "does not hold", None: "not checked"}[self.holds]


Block = Paragraph | Bullets | Table | Figure | Verdict


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def figures(self) -> list[Path]:
        return [b.path for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    # -- Markdown ---------------------------------------------------------------------------
    def to_markdown(self, base: Path) -> str:
        """Markdown with figure links relative to ``base`` (the folder of report.md)."""
        out = [f"# {self.title}", ""]
        if self.subtitle:
            out += [self.subtitle, ""]
        if len(self.sections) > 2:
            out += ["Contents: " + " · ".join(s.title for s in self.sections), ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for b in s.blocks:
                out += [*_md_block(b, base), ""]
        return "\n".join(out).rstrip() + "\n"

    # -- HTML -------------------------------------------------------------------------------
    def to_html(self) -> str:
        """One page; every figure is read and embedded, so the file stands alone."""
        body = [f"<h1>{_inline(self.title)}</h1>"]
        if self.subtitle:
            body.append(f'<p class="subtitle">{_inline(self.subtitle)}</p>')
        if len(self.sections) > 2:
            links = "".join(
                f'<li><a href="#s{i}">{_inline(s.title)}</a></li>'
                for i, s in enumerate(self.sections)
            )
            body.append(f"<nav><ol>{links}</ol></nav>")
        for i, s in enumerate(self.sections):
            body.append(f'<section id="s{i}"><h2>{_inline(s.title)}</h2>')
            body += [_html_block(b) for b in s.blocks]
            body.append("</section>")
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
        )

    def write(self, md_path: Path, html_path: Path) -> None:
        """Write both renderings (each through a temporary file, so neither is ever half
        written)."""
        for path, text in (
            (md_path, self.to_markdown(md_path.parent)),
            (html_path, self.to_html()),
        ):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)


# -- rendering helpers --------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _md_block(b: Block, base: Path) -> list[str]:
    if isinstance(b, Paragraph):
        return [b.text]
    if isinstance(b, Bullets):
        return [f"- {item}" for item in b.items]
    if isinstance(b, Table):
        lines = _md_table(b.headers, b.rows)
        return [*lines, "", f"*{b.caption}*"] if b.caption else lines
    if isinstance(b, Figure):
        rel = os.path.relpath(b.path, base)
        return [f"![{_md_cell(b.caption)}]({Path(rel).as_posix()})", "", f"*{b.caption}*"]
    lines = [f"**{b.claim}** — **{b.mark}**", "", f"- paper says: {b.paper}"]
    lines.append(f"- this study measured: {b.measured}")
    if b.criterion:
        lines.append(f"- criterion: {b.criterion}")
    return lines


def _inline(text: str) -> str:
    """Escape for HTML, then turn `code` spans into <code>."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def _html_block(b: Block) -> str:
    if isinstance(b, Paragraph):
        return f"<p>{_inline(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers) if any(b.headers) else ""
        rows = "".join(
            "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows
        )
        cap = f'<p class="caption">{_inline(b.caption)}</p>' if b.caption else ""
        thead = f"<thead><tr>{head}</tr></thead>" if head else ""
        return f"<table>{thead}<tbody>{rows}</tbody></table>{cap}"
    if isinstance(b, Figure):
        data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}" '
            f'style="max-width:{b.width}"><figcaption>{_inline(b.caption)}</figcaption></figure>'
        )
    cls = {True: "yes", False: "no", None: "na"}[b.holds]
    crit = f"<dt>criterion</dt><dd>{_inline(b.criterion)}</dd>" if b.criterion else ""
    return (
        f'<div class="claim {cls}"><div class="claim-head"><span class="badge">'
        f"{html.escape(b.mark)}</span> {_inline(b.claim)}</div><dl>"
        f"<dt>paper says</dt><dd>{_inline(b.paper)}</dd>"
        f"<dt>this study measured</dt><dd>{_inline(b.measured)}</dd>{crit}</dl></div>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2329;background:#f6f7f9;
margin:0;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:1.7em;margin:.2em 0}.subtitle{color:#555;margin-top:0}
h2{border-bottom:2px solid #e3e6ea;padding-bottom:4px;margin-top:2em}
nav ol{columns:2;font-size:.95em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
.caption{color:#555;font-size:.9em;margin-top:-4px;max-width:900px}
th,td{border:1px solid #d5d9de;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f4}tbody tr:nth-child(even){background:#fafbfc}
figure{margin:1em 0}figure img{border:1px solid #e3e6ea;display:block}
figcaption{color:#444;font-size:.9em;margin-top:4px;max-width:900px}
code{background:#f0f2f4;padding:0 3px;border-radius:3px;font-size:.92em}
.claim{border-left:6px solid #999;background:#f8f9fa;padding:8px 14px;margin:12px 0}
.claim.yes{border-color:#2e8b57}.claim.no{border-color:#c0392b}.claim.na{border-color:#999}
.claim-head{font-weight:600}.badge{display:inline-block;padding:1px 8px;border-radius:10px;
color:#fff;background:#999;font-size:.85em;margin-right:6px}
.yes .badge{background:#2e8b57}.no .badge{background:#c0392b}
.claim dl{display:grid;grid-template-columns:11em 1fr;gap:2px 10px;margin:6px 0 0}
.claim dt{color:#555}.claim dd{margin:0}
"""
