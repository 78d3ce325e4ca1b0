"""FuseChat's comparison, laid out as its paper lays it out, for every run with pairwise-fused models.

Rows in the paper's order: the sources, the pivot, the pairwise fusion targets, the merges of those targets (VaRM,
SCE, TIES, task arithmetic, linear), FuseLLM-style multi-source fusion into the pivot, and the CLM control; a column
per task of the suite with its seed ± and, for every fused row, the paired difference to the CLM control with its
interval. Numbers, intervals and Holm come from runs.py's run table (the same statistics, other pairs); this module
only chooses the pairs and the layout. The paper reports MT-Bench (a GPT-4 judge), which the miniature does not
measure: its numbers are a separate reported table (results/reported/fusechat_mt_bench.csv), never a column here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fusebench.report.runs import run_table
from fusebench.report.store import run_models
from fusebench.report.tables import Table, _slug, primary_rows

MERGE_NAMES = {"varm": "VaRM", "sce": "SCE", "ties": "TIES", "task_arithmetic": "task arithmetic",
               "linear": "linear"}     # the paper's order
REPORTED_TABLE = "fusechat_mt_bench"


def groups(models: dict[str, dict]) -> list[tuple[str, str]]:
    """(group label, model) in the paper's order, from run.json's models (`pairwise` and `merge` as published)."""
    target = next((n for n, i in models.items() if i.get("role") == "target"), None)
    merges = {n: i["merge"] for n, i in models.items() if isinstance(i.get("merge"), dict)}
    order = list(MERGE_NAMES)

    def from_pivot(info: dict) -> bool:
        return info.get("init") == target and not info.get("pairwise") and not info.get("merge")

    out = [("Source", n) for n, i in models.items() if i.get("role") == "source"]
    out += [("Pivot", target)] if target else []
    out += [("Pairwise fusion target", n) for n, i in models.items() if i.get("pairwise")]
    out += [(f"Merge ({MERGE_NAMES.get(m['method'], m['method'])})", n) for n, m in
            sorted(merges.items(), key=lambda nm: order.index(nm[1]["method"]) if nm[1]["method"] in order else 99)]
    out += [("FuseLLM multi-source fusion", n) for n, i in models.items()
            if from_pivot(i) and len(i.get("teachers") or []) > 1]
    out += [("CLM control", n) for n, i in models.items() if from_pivot(i) and not i.get("teachers")
            and i.get("role") == "baseline"]
    return out


def fusechat_table(primary: pd.DataFrame, run_id: str, suite: str, models: dict[str, dict],
                   reported: bool) -> list[Table]:
    """The comparison table and, where the run has seeds or per-item scores, the power table of its comparisons."""
    rows = primary[(primary["run_id"] == run_id) & (primary["suite"] == suite)]
    present = set(rows["model"])
    layout = [(g, m) for g, m in groups(models) if m in present]
    controls = [m for g, m in layout if g == "CLM control"]
    control = controls[0] if controls else None
    fused = [m for g, m in layout if g.startswith(("Pairwise", "Merge", "FuseLLM"))]
    base, power = run_table(primary, run_id, suite, [(m, control) for m in fused] if control else [])
    table_id = f"fusechat_{_slug(run_id)}_{_slug(suite)}"
    if power is not None:   # this table's own comparisons' power, under its own id (the caption names it)
        base.caption = base.caption.replace(f"`{power.id}`", f"`design_{table_id}`")
        power.id = f"design_{table_id}"
    lines = base.rows
    delta = {line: f"Δ vs {control}: {line}" for line in lines}
    columns = lines + ([delta[line] for line in lines] if control else [])
    row_labels, cells = [], {}
    for group, model in layout:
        label = f"{group}: {model}"
        row_labels.append(label)
        for line in lines:
            if (line, model) in base.cells:
                cells[(label, line)] = base.cells[(line, model)]
            if (line, f"Δ {model} − {control}") in base.cells:
                cells[(label, delta[line])] = base.cells[(line, f"Δ {model} − {control}")]
    where = (f"the paper's own MT-Bench scores are table `{REPORTED_TABLE}`" if reported else
             f"the paper's MT-Bench scores are not in this results store (results/reported/{REPORTED_TABLE}.csv)")
    caption = ("FuseChat's comparison in the paper's order: sources, pivot, pairwise fusion targets, merges of the "
               "targets, FuseLLM-style multi-source fusion into the pivot, CLM control. The paper scores MT-Bench "
               "with a GPT-4 judge, which this run does not reproduce, so no reported number sits in these columns: "
               f"{where}, a separate table. " + base.caption)
    table = Table(table_id, f"FuseChat comparison, run {run_id} ({suite})", caption, "Model", row_labels, columns,
                  cells, base.decimals, base.higher_is_better, "fusechat", [run_id])
    return [table] + ([power] if power is not None else [])


def fusechat_tables(frame: pd.DataFrame, results: Path) -> list[Table]:
    """One table per suite of every run whose run.json names pairwise fusion targets (runs published before it
    recorded `pairwise` get none)."""
    primary = primary_rows(frame)
    reported = bool((frame["table"] == REPORTED_TABLE).any())
    tables = []
    for run_id in sorted(set(primary["run_id"])) if not primary.empty else []:
        models = run_models(Path(results) / run_id)
        if not any(info.get("pairwise") for info in models.values()):
            continue
        for suite in sorted(set(primary.loc[primary["run_id"] == run_id, "suite"])):
            tables += fusechat_table(primary, run_id, suite, models, reported)
    return tables
