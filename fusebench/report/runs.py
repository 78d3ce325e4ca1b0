"""One table per reproduced run and suite: every model's mean ± standard error over its seeds, and for each
continual method the paired difference to its control (CLM from the same model, same seed) with a 95% interval.

Statistics are stats.py's. Bold marks only differences whose interval excludes zero: a value alone is never "best".
The caption names what a reader needs to judge the numbers: data source, items (documents) scored per task, seeds,
metric and which interval the differences carry. Averages are taken only over tasks of one metric family.
"""

from __future__ import annotations

import math

import pandas as pd

from fusebench.report import design, paired
from fusebench.report.stats import Estimate, over_seeds, paired_difference
from fusebench.report.tables import (METRIC_LABELS, NO_CHANGE_ROLES, Cell, Table, _finite, _ordered_models,
                                     _short_labels, _slug, primary_rows, relative_change, run_target)

# metrics that may share an average: the paper averages acc_norm with BoolQ's acc as one accuracy
METRIC_FAMILY = {"acc": "accuracy", "acc_norm": "accuracy"}
PERPLEXITY_METRICS = {"bits_per_byte", "byte_perplexity", "word_perplexity"}
SHARED = "shared"     # the seed key of a model trained once for every seed


def family(metric: str) -> str:
    return METRIC_FAMILY.get(metric, metric)


def _seed_key(seed) -> int | str:
    return SHARED if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)


def controls_and_methods(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, control) pairs: a control is continual training without teachers (CLM) of some model; its methods
    are the continual models with teachers (KD, FuseLLM) trained from the same model. Read from run.json."""
    made = rows.drop_duplicates("model").set_index("model")
    pairs = []
    for init in sorted({i for i in made["init"] if isinstance(i, str)}):
        same = made[made["init"] == init]
        controls = sorted(m for m, r in same.iterrows() if r["n_teachers"] == 0 and r["role"] not in NO_CHANGE_ROLES)
        if not controls:
            continue
        control = "clm" if "clm" in controls else controls[0]
        pairs += [(m, control) for m, r in same.iterrows() if r["n_teachers"] and r["n_teachers"] > 0]
    return pairs


def _per_seed(rows: pd.DataFrame) -> dict[tuple[str, str], tuple[dict, dict]]:
    """(task, model) -> ({seed: value}, {seed: per-item stderr})."""
    out: dict[tuple[str, str], tuple[dict, dict]] = {}
    for r in rows.itertuples():
        values, errors = out.setdefault((r.task, r.model), ({}, {}))
        values[_seed_key(r.seed)] = float(r.value)
        errors[_seed_key(r.seed)] = _finite(r.stderr)
    return out


def _rows_by_seed(rows: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """(task, model) -> {seed: its table row}: where a single-seed difference finds the per-item scores."""
    out: dict[tuple[str, str], dict] = {}
    for r in rows.itertuples():
        out.setdefault((r.task, r.model), {})[_seed_key(r.seed)] = r
    return out


def _items(by_seed: dict, task: str, model: str, seed) -> paired.ItemScores | None:
    r = by_seed.get((task, model), {}).get(seed)
    return None if r is None else paired.item_scores(r.source_file, r.task, r.metric, r.filter, r.value,
                                                     r.unit == "%")


def _average(per_seed, tasks: list[str], model: str) -> tuple[dict, dict]:
    """The mean over `tasks` for each seed the model has on all of them; its per-item stderr assumes independent
    tasks (√Σse² / k)."""
    seeds = set.intersection(*(set(per_seed[(t, model)][0]) for t in tasks))
    values, errors = {}, {}
    for s in seeds:
        values[s] = sum(per_seed[(t, model)][0][s] for t in tasks) / len(tasks)
        ses = [per_seed[(t, model)][1].get(s) for t in tasks]
        errors[s] = math.sqrt(sum(e * e for e in ses)) / len(tasks) if all(e is not None for e in ses) else None
    return values, errors


def _estimate_cell(values: dict, errors: dict, run_id: str, source: str) -> Cell:
    seeds = sorted(values, key=str)
    est: Estimate = over_seeds([values[s] for s in seeds], [errors.get(s) for s in seeds])
    return Cell(est.mean, est.stderr, run_id=run_id, source_file=source, n_seeds=est.n,
                stderr_basis="seeds" if est.n > 1 else "docs")


def describe_unsandboxed(rows: pd.DataFrame) -> str:
    """Scores whose generated code ran in the weaker mode (FUSEBENCH_SANDBOX_MODE=rlimits) say so in the caption."""
    models = sorted(set(rows.loc[rows["unsandboxed"].fillna(False).astype(bool), "model"]))
    if not models:
        return ""
    return (f" UNSANDBOXED: the generated code of {', '.join(models)} ran outside the sandbox "
            "(FUSEBENCH_SANDBOX_MODE=rlimits: it could reach the network and the host's disk); these scores are "
            "not comparable to sandboxed ones.")


def word_cells(words: pd.DataFrame, labels: dict[str, str], run_id: str) -> dict[tuple[str, str], Cell]:
    """(task label, model) -> the word a score is (chat_judge's "not judged"): printed as it is, never a number."""
    return {(labels[r.task], r.model): Cell(None, printed=r.text, run_id=run_id, source_file=r.source_file)
            for r in words.drop_duplicates(["task", "model"]).itertuples()}


def describe_words(words: pd.DataFrame) -> str:
    if words.empty:
        return ""
    shown = " and ".join(f"'{w}'" for w in sorted(set(words["text"])))
    return (f" A cell reading {shown} has no number: 'not judged' means no judge model was given, so the answers "
            "were kept but not rated (no stand-in judge); 'no parseable rating' means no judge reply held a rating. "
            "Such cells enter no difference and no average.")


def run_table(primary: pd.DataFrame, run_id: str, suite: str,
              pairs: list[tuple[str, str]] | None = None) -> tuple[Table, Table | None]:
    """The run's table for one suite; `pairs` (method, control) overrides the Δ columns read from run.json."""
    rows = primary[(primary["run_id"] == run_id) & (primary["suite"] == suite)]
    models = _ordered_models(rows)
    tasks = sorted(rows["task"].unique())
    labels, pattern = _short_labels(tasks)
    roles = dict(zip(rows["model"], rows["role"]))
    target = run_target(roles)
    up = bool(rows["higher_is_better"].iloc[0])
    metrics = sorted(rows["metric"].unique())
    unit = "domain" if set(metrics) <= PERPLEXITY_METRICS else "task"
    words, numbers = rows[rows["text"].notna()], rows[rows["text"].isna()]
    per_seed = _per_seed(numbers)
    sources = numbers.groupby(["task", "model"])["source_file"].agg(lambda f: ";".join(sorted(set(f)))).to_dict()
    cells: dict[tuple[str, str], Cell] = {(labels[t], m): _estimate_cell(*per_seed[(t, m)], run_id, sources[(t, m)])
                                          for t, m in per_seed}
    cells.update(word_cells(words, labels, run_id))
    task_metric = dict(zip(rows["task"], rows["metric"]))
    row_labels = [labels[t] for t in tasks]
    lines = [(labels[t], [t]) for t in tasks]
    complete = [t for t in tasks if all((t, m) in per_seed for m in models)]
    families = sorted({family(task_metric[t]) for t in complete})
    for fam in families:           # an average never mixes metrics: one per metric family with 2+ tasks
        group = [t for t in complete if family(task_metric[t]) == fam]
        if len(group) < 2:
            continue
        label = f"Avg. {len(group)} {unit}s" + (f" ({METRIC_LABELS.get(fam, fam)})" if len(families) > 1 else "")
        for m in models:
            values, errors = _average(per_seed, group, m)
            per_seed[(label, m)] = (values, errors)
            cells[(label, m)] = _estimate_cell(values, errors, run_id, "(mean of the rows above)")
        row_labels.append(label)
        lines.append((label, group))
    for (task, model), cell in cells.items():
        if target and roles.get(model) not in NO_CHANGE_ROLES:
            cell.change = relative_change(cell.value, cells.get((task, target), Cell(None)).value)
    pairs = controls_and_methods(rows) if pairs is None else pairs
    columns = list(models)
    by_seed = _rows_by_seed(rows)
    diffs, components = {}, {}
    for method, control in pairs:
        col = f"Δ {method} − {control}"
        columns.append(col)
        for label, keys in lines:
            key = keys[0] if len(keys) == 1 else label
            if (key, method) not in per_seed or (key, control) not in per_seed:
                continue
            (mv, me), (cv, ce) = per_seed[(key, method)], per_seed[(key, control)]
            diff = paired_difference(mv, cv, me, ce)
            if diff is None:
                continue
            shared = sorted(set(mv) & set(cv), key=str)
            if diff.basis == "seeds":         # several seeds: paired by document too, where every seed kept items
                crossed = design.seeds_items_difference(
                    [{s: _items(by_seed, t, method, s) for s in shared} for t in keys],
                    [{s: _items(by_seed, t, control, s) for s in shared} for t in keys], shared)
                if crossed is not None:
                    diff, components[(label, col)] = crossed
            elif diff.basis == "independent":   # one shared seed: paired by item where both kept their items
                diff = paired.items_difference([_items(by_seed, t, method, shared[0]) for t in keys],
                                               [_items(by_seed, t, control, shared[0]) for t in keys]) or diff
            diffs[(label, col)] = diff
    primary = {label for label, keys in lines if len(keys) > 1}
    diffs = design.correct(diffs, primary)
    bases = {d.basis for d in diffs.values()}
    for (label, col), diff in diffs.items():
        method, control = col[2:].split(" − ")
        cells[(label, col)] = Cell(diff.mean, signed=True, bold=diff.excludes_zero, run_id=run_id,
                                   ci=(diff.low, diff.high) if diff.low is not None else None, n_seeds=diff.n,
                                   source_file=f"({BASIS_NAMES[diff.basis]}: {method} − {control}, same seed)")
    metric_text = " / ".join(METRIC_LABELS.get(m, m) for m in metrics)
    is_percent = (rows["unit"] == "%").all()
    caption = (f"Reproduced run `{run_id}`, suite `{suite}`" + (f" (tasks `{pattern}`)" if pattern else "")
               + f". Metric: {metric_text}, {'higher' if up else 'lower'} is better. "
               + describe_data(rows, suite, unit) + describe_clusters(by_seed, tasks) + " " + describe_seeds(rows)
               + " "
               + (f"In parentheses: relative change against the run's target `{target}`. " if target else "")
               + describe_differences(pairs, bases) + describe_correction(diffs, primary)
               + describe_unsandboxed(rows) + describe_words(words))
    table = Table(f"run_{_slug(run_id)}_{_slug(suite)}", f"Run {run_id}: {metric_text} per {unit} ({suite})",
                  caption, unit.capitalize(), row_labels, columns, cells, 2 if is_percent else 4, up, "run", [run_id])
    power = design.design_table(table, diffs, components, primary, metrics[0], bool(is_percent))
    if power is not None:
        table.caption += describe_power(power, primary or set(row_labels[:1]), table.decimals)
    return table, power


def describe_power(power: Table, primary: set[str], decimals: int) -> str:
    """The power figure beside every comparison, on its primary endpoint."""
    parts = [f"{c.removeprefix('MDE₈₀ ')} detects ≥ {power.cell(r, c).value:.{decimals}f} on {r}"
             for c in power.columns if c.startswith("MDE₈₀ ") for r in sorted(primary)
             if power.cell(r, c).value is not None]
    return f" Power (80%): {'; '.join(parts)} (every row: table `{power.id}`)." if parts else ""


def describe_data(rows: pd.DataFrame, suite: str, unit: str) -> str:
    """Data source (hub, packaged, proxy) and items (documents) scored per task."""
    sources = sorted({s for s in rows["data_source"] if isinstance(s, str)}) or ["not recorded"]
    proxy = suite == "multipl-e" and (rows["metric"] == "bits_per_byte").any()
    text = f"Data: {', '.join(sources)}" + ("; MBPP bits per byte is a likelihood proxy, not pass@k" if proxy else "")
    counts = rows.drop_duplicates("task").set_index("task")
    shown = []
    for task, r in counts.iterrows():
        n, total = r["n_items"], r["n_original"]
        if n is None or (isinstance(n, float) and math.isnan(n)):
            shown.append(f"{task} ?")
        else:
            shown.append(f"{task} {int(n)}" + (f" of {int(total)}" if total and total == total and total != n else ""))
    what = "documents" if unit == "domain" else "items"
    return f"{text}. {what.capitalize()} scored per {unit}: {', '.join(shown)}."


def describe_clusters(by_seed: dict, tasks: list[str]) -> str:
    """Which tasks' documents are passages clustered by the source document they were cut from (clusters.json)."""
    shown = []
    for task in tasks:
        model, rows = next(((m, r) for (t, m), r in by_seed.items() if t == task), (None, {}))
        items = _items(by_seed, task, model, next(iter(rows))) if rows else None
        if items is not None and items.clusters:
            shown.append(f"{task} {len(items.doc_ids)} from {len(set(items.clusters))}")
    if not shown:
        return ""
    return (" The documents are passages cut from longer held-out documents, so intervals treat each source "
            "document as one independent unit (cluster-robust document variance, df from the number of source "
            f"documents; fusebench/report/power.py). Passages from source documents: {', '.join(shown)}.")


def describe_seeds(rows: pd.DataFrame) -> str:
    seeded = rows[rows["seed"].map(lambda s: _seed_key(s) != SHARED)]
    if seeded.empty:
        return "Seeds: one training run per model; ± (docs) is lm-eval's per-document standard error."
    seeds = sorted({int(s) for s in seeded["seed"]})
    dependent = sorted(set(seeded["model"]))
    shared = sorted(set(rows["model"]) - set(dependent))
    return (f"Seeds: {', '.join(map(str, seeds))} ({len(seeds)}) for {', '.join(dependent)}: value = mean over "
            "seeds ± (seeds) standard error over seeds"
            + (f"; {', '.join(shared)} trained once (shared by all seeds), ± (docs) per-document standard error, "
               "which is not comparable with ± (seeds)." if shared else "."))


BASIS_NAMES = {"seeds": "paired", "items": "paired by item", "independent": "independent per-item stderrs",
               "seeds×items": "paired by seed and document"}
BASIS_TEXT = {
    "seeds×items": "several seeds, paired by seed and by document: a t interval whose standard error carries both "
                   "the seed and the document variance (crossed seed × document components, Satterthwaite df; "
                   "fusebench/report/power.py)",
    "seeds": "95% Student-t interval over paired seeds",
    "items": "a single seed: 95% t interval paired by item (both models scored the same documents; the per-item "
             "differences' standard error, delta method for ratio metrics; averages combine the tasks' paired "
             "differences)",
    "independent": "a single seed: interval ±1.96·√(se₁² + se₂²) from independent per-item standard errors (not "
                   "paired: these results have no per-item scores on shared documents, so it is wider than a paired "
                   "interval)"}


def describe_differences(pairs: list[tuple[str, str]], bases: set[str]) -> str:
    if not pairs:
        return "No control/method pair in this run, so no paired differences; nothing is bold."
    how = "; ".join(BASIS_TEXT[b] for b in ("seeds×items", "seeds", "items", "independent") if b in bases) \
        or BASIS_TEXT["seeds"]
    if len(bases) > 1:
        how = "each cell's basis is in the CSV's source_file; " + how
    return (f"Δ columns: method − control at the same seed, [{how}]. Bold: a difference whose interval excludes "
            "zero; values are never bolded as 'best'.")


def describe_correction(diffs: dict, primary: set[str]) -> str:
    m = design.n_secondary(diffs, primary)
    if not m:
        return " The single row is the primary endpoint: 95% intervals."
    return (f" Primary endpoint: {', '.join(sorted(primary))} (95% intervals). The other {m} differences are "
            "secondary, Holm-corrected together: each interval is at its Holm step's level, so a bold secondary "
            "cell survives the correction.")


def run_tables(frame: pd.DataFrame) -> list[Table]:
    paired.clear_cache()      # item files are read once per rendering
    primary = primary_rows(frame)
    if primary.empty:
        return []
    pairs = primary[["run_id", "suite"]].drop_duplicates().sort_values(["run_id", "suite"])
    tables = []
    for run_id, suite in pairs.itertuples(index=False):
        table, power = run_table(primary, run_id, suite)
        tables += [table] + ([power] if power is not None else [])
    return tables
