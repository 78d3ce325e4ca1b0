"""`fusebench report`: every table and figure, rebuilt purely from the results store.

Writes into --out: the paper's tables (from results/reported/), one table per reproduced run and suite, the
reported-vs-reproduced comparisons where a run holds a paper table's models, figures, and `index.md` listing every
table with the runs and files its numbers came from.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.report import plots
from fusebench.report.fusechat import fusechat_tables
from fusebench.report.knowledge import knowledge_tables
from fusebench.report.reported import REPORTED_RUN_ID, reported_specs
from fusebench.report.render import FORMATS, write_table
from fusebench.report.store import ResultsStore
from fusebench.report.runs import run_tables
from fusebench.report.tables import Table, comparison_tables, paper_table


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise FusebenchError(f"--format {text!r}: unknown format(s) {', '.join(unknown) or '(none given)'}; choose "
                             f"from {', '.join(FORMATS)} (comma-separated, e.g. md,csv).")
    return formats


def build_tables(results: Path) -> list[Table]:
    frame = ResultsStore(results).frame()
    if frame.empty:
        raise FusebenchError(f"the results store {results} holds no results. Point --results at a directory with "
                             "results/reported/ (the paper's numbers) or reproduced runs (`fusebench eval`, "
                             "`fusebench run`).")
    reported_dir = results / REPORTED_RUN_ID
    specs = reported_specs(reported_dir) if (reported_dir / "manifest.json").exists() else []
    tables = [paper_table(frame, spec) for spec in specs]
    tables += run_tables(frame)
    tables += comparison_tables(frame, specs)
    tables += knowledge_tables(frame, results)
    tables += fusechat_tables(frame, results)
    return tables


def _figures(tables: list[Table], out: Path) -> dict[str, list[Path]]:
    """A figure per paper benchmark family and per reproduced table; BBH tables also get per-task change plots."""
    figures: dict[str, list[Path]] = {}
    by_id = {t.id: t for t in tables}
    if "kd_comparison" in by_id:
        figures["kd_comparison"] = plots.grouped_bars(by_id["kd_comparison"], out / "fig_benchmarks_paper", False)
    if "table1_bbh" in by_id:
        figures["table1_bbh"] = plots.change_bars(by_id["table1_bbh"], out / "fig_bbh_change_paper") or []
    if "ensemble_merging_perplexity" in by_id:
        t = by_id["ensemble_merging_perplexity"]
        figures[t.id] = plots.grouped_bars(t, out / "fig_perplexity_paper", False, "bits per byte, lower is better")
    for t in tables:
        if t.kind != "run":
            continue
        paths = plots.grouped_bars(t, out / f"fig_{t.id}", True, _run_ylabel(t)) if len(t.rows) <= 30 else []
        if t.id.endswith("_bbh"):   # the paper's per-task change figure; other suites' changes are in the tables
            paths += plots.change_bars(t, out / f"fig_{t.id}_change") or []
        figures[t.id] = paths
    return figures


def _run_ylabel(table: Table) -> str:
    metric = re.split(r" per (?:task|domain)", table.title.split(": ", 1)[-1])[0]
    if " / " in metric:      # several metrics in one table (acc for BoolQ, acc_norm elsewhere): the axis is their unit
        metric = "score (%)" if table.decimals == 2 else "score"
    return f"{metric}, {'higher' if table.higher_is_better else 'lower'} is better"


def write_index(tables: list[Table], written: dict[str, list[Path]], figures: dict[str, list[Path]], out: Path,
                results: Path) -> Path:
    lines = ["# fusebench report", "",
             f"Rebuilt by `fusebench report` from the results store `{results}`; nothing here was typed by hand. "
             "Reported numbers come from the paper (results/reported/, see its README for the citation); "
             "reproduced ones from lm-eval runs in results/<run_id>/. Every table's .csv lists, per cell, the run "
             "and the file the number came from.", ""]
    sections = [("paper", "The paper's tables (reported)"), ("comparison", "Reported vs reproduced"),
                ("run", "Reproduced runs"), ("fusechat", "FuseChat comparison (the paper's layout, reproduced numbers)"),
                ("knowledge", "Knowledge available (sources, teachers) and captured (each method)"), ("design", "Power of each comparison (what each run's design detects)")]
    for kind, heading in sections:
        chosen = [t for t in tables if t.kind == kind]
        if not chosen:
            continue
        lines += [f"## {heading}", "", "| table | files | provenance | from |", "|---|---|---|---|"]
        for t in chosen:
            files = " ".join(f"[{p.suffix[1:]}]({p.name})" for p in written[t.id] + figures.get(t.id, []))
            sources = sorted({c.source_file for c in t.cells.values() if c.source_file and "(" not in c.source_file})
            provenance = {"paper": "reported", "run": "reproduced", "comparison": "reported + reproduced",
                          "design": "reproduced", "knowledge": "reproduced", "fusechat": "reproduced"}[kind]
            runs = ", ".join(f"`{r}`" for r in t.runs)
            lines.append(f"| {t.title} | {files} | {provenance} (run {runs}) | "
                         f"{'; '.join(_relative(s, results) for s in sources[:6])}"
                         f"{f' (+{len(sources) - 6} more)' if len(sources) > 6 else ''} |")
        lines.append("")
    path = out / "index.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _relative(path: str, results: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(results.resolve().parent))
    except ValueError:
        return path


def report(results: Path, out: Path, formats: list[str], stderr: bool = True, figures: bool = True) -> list[Table]:
    """Render every table (and figure) into `out`; returns the tables rendered."""
    tables = build_tables(results)
    out.mkdir(parents=True, exist_ok=True)
    written = {t.id: write_table(t, out, formats, stderr) for t in tables}
    drawn = _figures(tables, out) if figures else {}
    write_index(tables, written, drawn, out, results)
    return tables


def main(args) -> int:
    start = time.perf_counter()
    results, out = Path(args.results), Path(args.out)
    tables = report(results, out, _formats(args.format))    # ± is always shown (--stderr is kept as a no-op)
    print(f"wrote {len(tables)} tables and index.md to {out} in {time.perf_counter() - start:.1f} s")
    return 0
