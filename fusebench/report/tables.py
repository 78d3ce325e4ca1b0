"""Tables built from the tidy results frame: the paper's tables, one table per reproduced run and suite, and
reported-vs-reproduced comparisons. Rendering (Markdown, LaTeX, HTML, CSV) is render.py's job.

Conventions, as in the paper: relative changes are (model − target) / target in percent, shown for models derived
from the target (baselines and fused models; not for the target, its sources/experts or a larger reference model);
an average's change is computed from the averages; the best value of each task or benchmark is bold.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import pandas as pd

from fusebench.report.reported import AVERAGE, TableSpec

NO_CHANGE_ROLES = {"target", "source", "expert", "teacher", "base", "reference"}
ROLE_ORDER = ["source", "expert", "teacher", "reference", "target", "base", "baseline", "fused"]
# the metric a task is shown with: the first it has (BoolQ has no acc_norm, so it falls back to acc, as in the paper)
METRIC_PREFERENCE = ["pass@1", "exact_match", "acc_norm", "acc", "f1", "bleu", "bits_per_byte", "byte_perplexity",
                     "word_perplexity", "score"]
FILTER_PREFERENCE = ["none", "get-answer", "strict-match", "flexible-extract"]
METRIC_LABELS = {"bits_per_byte": "bits per byte", "acc_norm": "accuracy (length-normalised, %)",
                 "acc": "accuracy (%)", "exact_match": "exact match (%)", "pass@1": "pass@1 (%)",
                 "byte_perplexity": "byte perplexity", "word_perplexity": "word perplexity", "f1": "F1 (%)",
                 "score": "judge rating (1-10)"}


@dataclass
class Cell:
    value: float | None
    stderr: float | None = None
    change: float | None = None        # relative change against the target, in percent
    bold: bool = False
    printed: str | None = None         # the paper's own digits, shown verbatim
    signed: bool = False               # a difference: always show its sign
    ci: tuple[float, float] | None = None   # a difference's 95% interval
    n_seeds: int | None = None         # seeds behind the value (None: not a reproduced mean)
    stderr_basis: str | None = None    # what ± measures: "seeds" (over seeds) or "docs" (per document, one run)
    run_id: str = ""
    source_file: str = ""


@dataclass
class Table:
    id: str
    title: str
    caption: str
    row_header: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    decimals: int = 2
    higher_is_better: bool = True
    kind: str = "paper"                # paper | run | comparison
    runs: list[str] = field(default_factory=list)

    def cell(self, row: str, column: str) -> Cell:
        return self.cells.get((row, column)) or Cell(None)


def _finite(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def relative_change(value: float | None, target: float | None) -> float | None:
    if value is None or target is None or target == 0:
        return None
    return (value - target) / abs(target) * 100.0


def _mark_best(table: Table, by: str, exclude: set[str] = frozenset()) -> None:
    """Bold the best value of every row (by='row') or column (by='column'); ties are all bold."""
    lines = table.rows if by == "row" else table.columns
    others = table.columns if by == "row" else table.rows
    for line in lines:
        keys = [(line, o) if by == "row" else (o, line) for o in others if o not in exclude]
        values = [(k, table.cells[k].value) for k in keys if k in table.cells and table.cells[k].value is not None]
        if len(values) < 2:
            continue
        best = (max if table.higher_is_better else min)(v for _, v in values)
        for k, v in values:
            table.cells[k].bold = abs(v - best) < 1e-9


def _rows_of(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    return frame[(frame["provenance"] == "reported") & (frame["table"] == spec.id)]


def paper_table(frame: pd.DataFrame, spec: TableSpec) -> Table:
    """One of the paper's tables from the reported rows, laid out as the paper lays it out."""
    rows = _rows_of(frame, spec)
    row_labels = list(dict.fromkeys(rows["row_label"]))
    col_labels = list(dict.fromkeys(rows["col_label"]))
    cells = {(r.row_label, r.col_label): Cell(r.value, _finite(r.stderr), printed=r.printed, run_id=r.run_id,
                                              source_file=r.source_file) for r in rows.itertuples()}
    role = dict(zip(rows["model"], rows["role"]))
    by_model_column = spec.layout == "tasks_by_model"

    def reference(label: str) -> float | None:   # the target's value on this task / benchmark
        if spec.reference:
            ref = frame[(frame["table"] == spec.reference.table) & (frame["model"] == spec.reference.model)
                        & (frame["col_label"] == label)]
            return float(ref["value"].iloc[0]) if len(ref) else None
        key = (label, spec.target) if by_model_column else (spec.target, label)
        return cells[key].value if key in cells else None

    for (r, c), cell in cells.items():
        model, label = (c, r) if by_model_column else (r, c)
        if role.get(model) not in NO_CHANGE_ROLES:
            cell.change = relative_change(cell.value, reference(label))
    table = Table(spec.id, f"{spec.paper_table}: {spec.title}", _paper_caption(spec), "Task" if by_model_column
                  else "Model", row_labels, col_labels, cells, spec.decimals, spec.higher_is_better, "paper",
                  ["reported"])
    references = {m for m, r in role.items() if r == "reference"}
    _mark_best(table, "row" if by_model_column else "column", exclude=references)
    return table


def _paper_caption(spec: TableSpec) -> str:
    if spec.reference:
        against = f"{spec.reference.model} (row of {spec.reference.table})"
    else:
        against = spec.target or "the target"
    direction = "higher is better" if spec.higher_is_better else "lower is better"
    note = " The reference model is not bolded (shown for scale)." if "reference" in spec.roles.values() else ""
    metric = METRIC_LABELS.get(spec.metric, spec.metric if spec.metric != "average" else "suite averages")
    return (f"Reported in the paper ({spec.paper_table}); data: the benchmarks' full test sets as the paper scored "
            f"them (not rerun here). Metric: {metric}. Seeds and per-item errors: not reported, so no intervals. "
            f"In parentheses: relative change against {against}; "
            f"bold: the paper's best per {'task' if spec.layout == 'tasks_by_model' else 'benchmark'} "
            f"({direction}).{note}" + (f" Source: {spec.source}" if spec.source else ""))


# --- reproduced runs ------------------------------------------------------------------------------------------

def primary_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, suite, task) the one metric a table shows: first of METRIC_PREFERENCE, then filter order."""
    rows = frame[(frame["provenance"] == "reproduced") & ~frame["is_average"].astype(bool)].copy()
    if rows.empty:
        return rows
    rank = {m: i for i, m in enumerate(METRIC_PREFERENCE)}
    frank = {f: i for i, f in enumerate(FILTER_PREFERENCE)}
    rows["_m"] = rows["metric"].map(lambda m: rank.get(m, len(rank)))
    rows["_f"] = rows["filter"].map(lambda f: frank.get(f, len(frank)))
    rows = rows.sort_values(["_m", "_f", "metric", "filter"])
    chosen = rows.groupby(["run_id", "model", "suite", "task", "seed"], sort=False, dropna=False).head(1)
    return chosen.drop(columns=["_m", "_f"])


def _ordered_models(rows: pd.DataFrame) -> list[str]:
    roles = dict(zip(rows["model"], rows["role"]))
    order = {r: i for i, r in enumerate(ROLE_ORDER)}
    return sorted(roles, key=lambda m: (order.get(roles[m], len(order)), m))


def run_target(roles: dict[str, str | None]) -> str | None:
    for wanted in ("target", "base"):
        named = [m for m, r in roles.items() if r == wanted]
        if len(named) == 1:
            return named[0]
    return None


def _short_labels(tasks: list[str]) -> tuple[dict[str, str], str]:
    """Drop what every task name shares (`bbh_cot_fewshot_*_offline`), cut at word boundaries; returns the labels
    and the pattern they were cut from."""
    if len(tasks) < 2:
        return {t: t for t in tasks}, ""
    prefix = os.path.commonprefix(tasks)
    prefix = prefix[: max(prefix.rfind("_"), prefix.rfind("-")) + 1]
    suffix = os.path.commonprefix([t[len(prefix):][::-1] for t in tasks])[::-1]
    suffix = suffix[min((i for i in (suffix.find("_"), suffix.find("-")) if i >= 0), default=len(suffix)):]
    labels = {t: t[len(prefix):len(t) - len(suffix)] or t for t in tasks}
    return labels, f"{prefix}*{suffix}" if prefix or suffix else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


# --- reported vs reproduced -----------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def task_matches(reproduced_task: str, key: str) -> bool:
    """`bbh_cot_fewshot_logical_deduction_three_objects` matches key `logical_deduction_three_objects`: the key's
    words appear as consecutive words of the task name (so the language `r` never matches `ruby`)."""
    words, want = re.split(r"[_\-.\s]+", reproduced_task.lower()), key.lower().split("_")
    return any(words[i:i + len(want)] == want for i in range(len(words) - len(want) + 1))


def match_models(paper: dict[str, str | None], run: dict[str, str | None]) -> dict[str, str]:
    """paper model -> reproduced model: same name (ignoring case and punctuation), else the only model of the same
    role on both sides (target, fused), else a shared name stem within a role (`mpt` in `tiny-src-mpt`)."""
    matched: dict[str, str] = {}
    for p in paper:
        same = [m for m in run if _norm(m) == _norm(p)]
        if same:
            matched[p] = same[0]
    for p, role in paper.items():
        if p in matched or role is None:
            continue
        mine = [m for m, r in run.items() if r == role and m not in matched.values()]
        theirs = [q for q, r in paper.items() if r == role]
        if len(mine) == 1 and len(theirs) == 1:
            matched[p] = mine[0]
            continue
        stem = re.sub(r"\d+b$", "", _norm(p))
        hits = [m for m in mine if stem and stem in _norm(m)]
        if len(hits) == 1:
            matched[p] = hits[0]
    return matched


def _covers(reproduced_tasks, paper_tasks) -> bool:
    return all(any(task_matches(t, key) for t in reproduced_tasks) for key in paper_tasks)


def protocol_metric(suite: str, task_key: str, spec: TableSpec) -> str:
    """The metric the paper's cell is in: the suite's own choice per benchmark (acc for BoolQ, pass@1 for MultiPL-E),
    else the table's metric."""
    from fusebench.evaluate.suites import SUITES

    return SUITES[suite].primary_metric(task_key) if suite in SUITES else spec.metric


def same_protocol(ours: pd.DataFrame, paper_tasks: dict, spec: TableSpec) -> pd.DataFrame:
    """The reproduced rows that may sit in a reported table: measured with the metric of the paper's cell (a bits
    per byte proxy never enters a pass@1 cell) on the whole test set (a run limited to some items is not the
    paper's protocol: it goes to its own table only)."""
    def keep(r) -> bool:
        keys = [k for ks in paper_tasks.values() for k in ks if task_matches(r.task, k)]
        if not keys or r.metric != protocol_metric(r.suite, keys[0], spec):
            return False
        n, total = r.n_items, r.n_original
        return not (n == n and total == total and n is not None and total is not None and n < total)
    return ours[[keep(r) for r in ours.itertuples()]] if len(ours) else ours


def comparison_table(frame: pd.DataFrame, primary: pd.DataFrame, spec: TableSpec, run_id: str) -> Table | None:
    """The paper's table beside the same cells of a reproduced run, with the difference (ours − paper); only cells
    of the same metric and protocol (same_protocol)."""
    reported = _rows_of(frame, spec)
    known = frame[(frame["provenance"] == "reported") & ~frame["is_average"].astype(bool)]
    paper_tasks = known.groupby("suite")["task"].unique().to_dict()
    ours = same_protocol(primary[primary["run_id"] == run_id], paper_tasks, spec)
    if reported.empty or ours.empty:
        return None
    models = match_models(dict(zip(reported["model"], reported["role"])), dict(zip(ours["model"], ours["role"])))
    suites = {_norm(s): s for s in ours["suite"].unique()}
    found: dict[tuple[str, str], Cell] = {}
    for r in reported.itertuples():
        model, suite = models.get(r.model), suites.get(_norm(r.suite))
        if model is None or (suite is None and r.task == AVERAGE):
            continue
        mine = ours[ours["model"] == model]
        if suite is not None:
            mine = mine[mine["suite"] == suite]
        if r.task != AVERAGE:   # without the table's suite (LAMBADA is a suite of its own) search every suite
            mine = mine[mine["task"].map(lambda t: task_matches(t, r.task))]
        elif not _covers(mine["task"], paper_tasks.get(r.suite, ())):
            continue            # an average over fewer tasks than the paper's is not the paper's average
        if mine.empty:
            continue
        stderr = _finite(mine["stderr"].iloc[0]) if len(mine) == 1 else None
        found[(r.row_label, r.col_label)] = Cell(float(mine["value"].mean()), stderr, run_id=run_id,
                                                 source_file=";".join(sorted(set(mine["source_file"]))))
    if not found:
        return None
    paper = paper_table(frame, spec)
    rows = [r for r in paper.rows if any((r, c) in found for c in paper.columns)]
    cols = [c for c in paper.columns if any((r, c) in found for r in paper.rows)]
    columns, cells = [], {}
    for c in cols:
        columns += [f"{c} paper", f"{c} ours", f"{c} Δ"]
        for r in rows:
            theirs, mine = paper.cell(r, c), found.get((r, c))
            cells[(r, f"{c} paper")] = Cell(theirs.value, printed=theirs.printed, run_id="reported",
                                            source_file=theirs.source_file)
            if mine is not None:
                cells[(r, f"{c} ours")] = mine
                if theirs.value is not None:
                    cells[(r, f"{c} Δ")] = Cell(mine.value - theirs.value, signed=True, run_id=run_id,
                                                source_file="(ours − paper)")
    pairs = ", ".join(f"{p} ↔ {m}" for p, m in models.items())
    caption = (f"Reported ({spec.paper_table}) beside reproduced run `{run_id}` (models matched: {pairs}). "
               "Δ = ours − paper, in the table's units. Only cells of the paper's metric, scored on the whole test "
               "set, are compared; proxies and item-limited runs are in the run's own tables.")
    return Table(f"{spec.id}_vs_{_slug(run_id)}", f"{spec.paper_table} reported vs run {run_id}", caption,
                 paper.row_header, rows, columns, cells, spec.decimals, spec.higher_is_better, "comparison",
                 ["reported", run_id])


def comparison_tables(frame: pd.DataFrame, specs: list[TableSpec]) -> list[Table]:
    primary = primary_rows(frame)
    if primary.empty:
        return []
    tables = []
    for run_id in sorted(primary["run_id"].unique()):
        for spec in specs:
            table = comparison_table(frame, primary, spec, run_id)
            if table is not None:
                tables.append(table)
    return tables
