"""Tables as Markdown, LaTeX, HTML and CSV.

A cell reads like the paper's: "41.75 (+5.16%)", the number bold when it is the best of its task. The CSV is long
form (one line per cell, full precision, stderr, change, bold and the run and file it came from), for further
analysis rather than for reading.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from fusebench.report.tables import Cell, Table

FORMATS = {"md": "md", "latex": "tex", "html": "html", "csv": "csv"}


def number_text(cell: Cell, decimals: int) -> str:
    if cell.printed is not None:
        return cell.printed
    if cell.value is None:
        return "—"
    return f"{cell.value:+.{decimals}f}" if cell.signed else f"{cell.value:.{decimals}f}"


def _parts(cell: Cell, decimals: int, stderr: bool) -> tuple[str, str]:
    """(number, the rest): the number is what gets bolded."""
    rest = ""
    if stderr and cell.stderr is not None and cell.value is not None:
        rest += f" ± {cell.stderr:.{decimals}f}" + (f" ({cell.stderr_basis})" if cell.stderr_basis else "")
    if cell.ci is not None:
        rest += f" [{cell.ci[0]:+.{decimals}f}, {cell.ci[1]:+.{decimals}f}]"
    if cell.change is not None:
        rest += f" ({cell.change:+.2f}%)"
    return number_text(cell, decimals), rest


def to_markdown(table: Table, stderr: bool = False) -> str:
    def fmt(cell: Cell) -> str:
        num, rest = _parts(cell, table.decimals, stderr)
        return (f"**{num}**" if cell.bold else num) + rest

    lines = [f"### {table.title}", "", table.caption, "",
             "| " + " | ".join([table.row_header, *table.columns]) + " |",
             "|" + "---|" + "---:|" * len(table.columns)]
    for row in table.rows:
        lines.append("| " + " | ".join([row, *(fmt(table.cell(row, c)) for c in table.columns)]) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "Δ": r"$\Delta$", "±": r"$\pm$", "—": "--", "↔": r"$\leftrightarrow$", "−": "-",
                  "`": ""}   # Markdown code quotes in captions


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table, stderr: bool = False) -> str:
    """A booktabs table (\\usepackage{booktabs})."""
    def fmt(cell: Cell) -> str:
        num, rest = _parts(cell, table.decimals, stderr)
        num = latex_escape(num)
        return (rf"\textbf{{{num}}}" if cell.bold else num) + latex_escape(rest)

    head = " & ".join(latex_escape(h) for h in [table.row_header, *table.columns])
    body = [" & ".join([latex_escape(row), *(fmt(table.cell(row, c)) for c in table.columns)]) + r" \\"
            for row in table.rows]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                      rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
                      rf"\label{{tab:{table.id}}}", r"\begin{tabular}{l" + "r" * len(table.columns) + "}",
                      r"\toprule", head + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
                      r"\end{table}"]) + "\n"


def to_html(table: Table, stderr: bool = False) -> str:
    def fmt(cell: Cell) -> str:
        num, rest = (html.escape(p) for p in _parts(cell, table.decimals, stderr))
        return (f"<b>{num}</b>" if cell.bold else num) + rest

    head = "".join(f"<th>{html.escape(h)}</th>" for h in [table.row_header, *table.columns])
    body = "\n".join("<tr><th>" + html.escape(row) + "</th>"
                     + "".join(f'<td class="num">{fmt(table.cell(row, c))}</td>' for c in table.columns) + "</tr>"
                     for row in table.rows)
    return (f'<table id="{table.id}">\n<caption><b>{html.escape(table.title)}</b>. {html.escape(table.caption)}'
            f"</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n")


def to_csv(table: Table, stderr: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([table.row_header.lower(), "column", "value", "stderr", "change_pct", "bold", "text", "run_id",
                     "source_file", "ci_low", "ci_high", "n_seeds"])
    for row in table.rows:
        for col in table.columns:
            cell = table.cells.get((row, col))
            if cell is None:
                continue
            num, rest = _parts(cell, table.decimals, stderr=True)
            writer.writerow([row, col, "" if cell.value is None else repr(cell.value),
                             "" if cell.stderr is None else repr(cell.stderr),
                             "" if cell.change is None else f"{cell.change:.4f}", int(cell.bold), num + rest,
                             cell.run_id, cell.source_file, *(("", "") if cell.ci is None else map(repr, cell.ci)),
                             "" if cell.n_seeds is None else cell.n_seeds])
    return out.getvalue()


RENDERERS = {"md": to_markdown, "latex": to_latex, "html": to_html, "csv": to_csv}

_HTML_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px}} td.num{{text-align:right}} caption{{text-align:left}}</style>
</head><body>
{body}
</body></html>
"""


def write_table(table: Table, out_dir: Path, formats: list[str], stderr: bool = False) -> list[Path]:
    """Write `<id>.md/.tex/.html/.csv` and return the paths written."""
    paths = []
    for fmt in formats:
        text = RENDERERS[fmt](table, stderr) if fmt != "csv" else to_csv(table)
        if fmt == "html":
            text = _HTML_PAGE.format(title=html.escape(table.title), body=text)
        path = out_dir / f"{table.id}.{FORMATS[fmt]}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
