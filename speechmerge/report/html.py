"""The report's Markdown files (tables, README) as standalone HTML pages, for ``snakemake --report``.

Renders the Markdown the report writes: ``#`` headings, pipe tables (alignment from the
separator row; a row of empty cells separates groups of rows), ``*``/``-`` bullet lists,
paragraphs, ``**bold**``, ``*italic*`` and ```code```. Anything else is kept as escaped text, so
nothing the Markdown holds is lost. Wide tables scroll sideways inside the page.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 14px;
       margin: 12px; color: #222; }
h1, h2, h3 { font-weight: 600; margin: 0.8em 0 0.4em; }
h1 { font-size: 1.3em; } h2 { font-size: 1.15em; } h3 { font-size: 1.05em; }
.scroll { overflow-x: auto; margin: 0.6em 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; white-space: nowrap; }
th { background: #f0f3f7; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
tr.sep td { background: #e8e8e8; padding: 1px; border-left: none; border-right: none; }
td.r, th.r { text-align: right; } td.c, th.c { text-align: center; }
td.w { white-space: normal; min-width: 22em; max-width: 36em; }
ul { padding-left: 1.4em; } li { margin: 0.15em 0; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; font-size: 0.92em; }
p.caption { color: #444; }
"""

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
]


def inline(text: str) -> str:
    """Escape ``text`` and turn ``code``, **bold** and *italic* into tags (code first, so its
    content is left alone)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False)
        for pattern, repl in _INLINE[1:]:
            s = pattern.sub(repl, s)
        out.append(s)
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def _is_separator(line: str) -> bool:
    cells = _cells(line)
    return bool(cells) and all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def _align(spec: str) -> str:
    if spec.startswith(":") and spec.endswith(":"):
        return "c"
    return "r" if spec.endswith(":") else ""


WRAP_CHARS = 60  # a column whose cells are this long on average wraps instead of widening the table


def _table(lines: list[str]) -> str:
    header, aligns = _cells(lines[0]), [_align(c) for c in _cells(lines[1])]
    rows = [_cells(line) for line in lines[2:]]
    lengths = [[len(r[i]) for r in rows if i < len(r) and r[i]] for i in range(len(header))]
    wrap = [bool(n) and sum(n) / len(n) >= WRAP_CHARS for n in lengths]

    def cls(i):
        a = (aligns[i] if i < len(aligns) else "") + (" w" if i < len(wrap) and wrap[i] else "")
        return f' class="{a.strip()}"' if a.strip() else ""

    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th{cls(i)}>{inline(c)}</th>" for i, c in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for line in lines[2:]:
        cells = _cells(line)
        if not any(cells):
            out.append(f'<tr class="sep"><td colspan="{len(header)}"></td></tr>')
            continue
        out.append("<tr>" + "".join(f"<td{cls(i)}>{inline(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def markdown_to_html(text: str, title: str) -> str:
    """A complete HTML page of the Markdown ``text`` (see the module docstring for what is rendered)."""
    lines = text.splitlines()
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _is_separator(lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            body.append(_table(lines[i:j]))
            i = j
        elif re.match(r"^\s*[*-]\s+", line):
            items = []
            while i < len(lines) and lines[i].strip():
                m = re.match(r"^\s*[*-]\s+(.*)$", lines[i])
                if m:
                    items.append(m.group(1))
                elif items:  # a continuation line of the last item
                    items[-1] += " " + lines[i].strip()
                i += 1
            body.append("<ul>" + "".join(f"<li>{inline(it)}</li>" for it in items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,6}\s|\s*[*-]\s|\s*\|)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            if not para:  # a stray table line without a separator row
                para, i = [line.strip()], i + 1
            body.append(f"<p>{inline(' '.join(para))}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html_tables(report_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Render every Markdown file of a report directory (``table.md``, ``training.md``, the sweeps,
    ``README.md``...) to ``out_dir/<name>.html``; written into a temporary directory moved into
    place, so a failure leaves no partial directory. Returns the pages written."""
    from speechmerge.utils import atomic_path

    report_dir = Path(report_dir)
    sources = sorted(report_dir.glob("*.md"))
    if not sources:
        raise FileNotFoundError(f"{report_dir}: no Markdown files to render")
    written = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for src in sources:
            name = src.stem
            (tmp / f"{name}.html").write_text(
                markdown_to_html(src.read_text(encoding="utf-8"), f"{report_dir.name}: {name}"), encoding="utf-8"
            )
            written.append(Path(out_dir) / f"{name}.html")
    return written
