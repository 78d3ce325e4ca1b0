"""A run table's comparisons as a designed experiment: seed × document intervals, the primary endpoint and Holm's
correction of the per-domain tests, and what the design could detect (the statistics are power.py's).

The run table (runs.py) asks three things here:
* `seeds_items_difference`: with several seeds whose evaluations all kept per-item scores on the same documents,
  the difference and its interval carry both seed and document variance (basis "seeds×items");
* `correct`: the average row is the primary endpoint (level 0.05); every per-domain / per-task difference of the
  table is a secondary test, Holm-corrected over all of them, shown with its interval at its Holm level;
* `design_table`: beside every comparison, the minimal difference it detects with 80% power and, where the seed
  variance was measured, how many seeds would detect the metric's reference difference (`DETECT`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from fusebench.evaluate.items import RATIO_METRICS
from fusebench.report.power import (ALPHA, POWER, Components, TTest, crossed_test, holm_levels, mde,
                                    ratio_linearised, seeds_needed, stack_domains)
from fusebench.report.stats import Difference
from fusebench.report.tables import Cell, Table

# the difference a design should resolve, per metric: 0.002 bits per byte is the tiny world's fusion-vs-CLM scale
# (issue 19); one point for percent scores
DETECT = {"bits_per_byte": 0.002, "%": 1.0}


def _row(method, control, metric: str, order: tuple) -> np.ndarray | None:
    if set(method.doc_ids) != set(order) or set(control.doc_ids) != set(order):
        return None
    m, c = dict(zip(method.doc_ids, method.values)), dict(zip(control.doc_ids, control.values))
    mv, cv = [m[d] for d in order], [c[d] for d in order]
    if metric in RATIO_METRICS:
        return ratio_linearised(mv, cv, metric)
    return method.scale * (np.asarray(mv, dtype=np.float64) - np.asarray(cv, dtype=np.float64))


def seeds_items_difference(method: list[dict], control: list[dict], seeds: list
                           ) -> tuple[Difference, Components] | None:
    """method[t] / control[t]: seed -> ItemScores (or None) of task t. None unless every seed of both has items on
    the same ≥ 2 documents of every task (then the seed-only interval stands)."""
    if len(seeds) < 2:
        return None
    parts, clusters = [], []
    for t, (m_by_seed, c_by_seed) in enumerate(zip(method, control, strict=True)):
        rows, order, first = [], None, None
        for s in seeds:
            m, c = m_by_seed.get(s), c_by_seed.get(s)
            if m is None or c is None or m.metric != c.metric:
                return None
            order, first = order or c.doc_ids, first or c
            row = _row(m, c, m.metric, order)
            if row is None:
                return None
            rows.append(row)
        if len(order) < 2:
            return None
        parts.append(np.vstack(rows))
        by_doc = dict(zip(first.doc_ids, first.clusters)) if first.clusters else None
        # a source document is one unit across tasks (the general mix scores passages the domains score too)
        clusters += [by_doc[d] if by_doc else f"task {t} document {d}" for d in order]
    u = parts[0] if len(parts) == 1 else stack_domains(parts)
    clustered = any(p.clusters for by_seed in control for p in by_seed.values() if p is not None)
    if clustered and len(set(clusters)) < 2:    # one source document: no document variance to estimate
        return None
    test, comp = crossed_test(u, clusters if clustered else None)
    low, high = test.interval()
    return Difference(test.mean, low, high, len(seeds), "seeds×items", u.shape[1], se=test.se, df=test.df), comp


def _test(diff: Difference) -> TTest:
    return TTest(diff.mean, diff.se, diff.df)


def correct(diffs: dict[tuple[str, str], Difference], primary: set[str]) -> dict[tuple[str, str], Difference]:
    """Primary rows keep their 95% interval; the other rows' differences are Holm-corrected together, each interval
    at its Holm level. With no primary row (a one-task table) the single row is primary: nothing to correct."""
    secondary = [k for k, d in diffs.items() if k[0] not in primary and d.se is not None]
    if not primary or not secondary:
        return dict(diffs)
    rejected, levels = holm_levels([_test(diffs[k]).p_value() for k in secondary])
    out = dict(diffs)
    for k, level in zip(secondary, levels):
        low, high = _test(diffs[k]).interval(level)
        out[k] = replace(diffs[k], low=low, high=high, alpha=level)
    return out


def n_secondary(diffs: dict, primary: set[str]) -> int:
    return sum(1 for k, d in diffs.items() if k[0] not in primary and d.se is not None) if primary else 0


def _detect(metric: str, percent: bool) -> float | None:
    return DETECT["%"] if percent else DETECT.get(metric)


def design_table(run: Table, diffs: dict[tuple[str, str], Difference], components: dict, primary: set[str],
                 metric: str, percent: bool) -> Table | None:
    """Per comparison and row: the MDE at 80% power (primary rows at α = 0.05, secondary rows at Holm's first, most
    stringent level α/m) and the seeds that would detect DETECT[metric] on these documents."""
    columns = [c for c in run.columns if c.startswith("Δ ")]
    if not columns or not diffs:
        return None
    m = n_secondary(diffs, primary)
    target = _detect(metric, percent)
    cells: dict[tuple[str, str], Cell] = {}
    out_cols = []
    for col in columns:
        mde_col, seeds_col = f"MDE₈₀ {col[2:]}", f"seeds for {target:g} {col[2:]}" if target else None
        out_cols += [mde_col] + ([seeds_col] if seeds_col else [])
        for row in run.rows:
            diff = diffs.get((row, col))
            if diff is None or diff.se is None:
                continue
            alpha = ALPHA if (row in primary or not m) else ALPHA / m
            cells[(row, mde_col)] = Cell(mde(diff.se, diff.df, alpha, POWER), source_file=f"({diff.basis})")
            if seeds_col:
                comp = components.get((row, col))
                if comp is None:
                    text = "— (seed variance not measured: one seed or no per-item scores)"
                else:
                    need = seeds_needed(comp, target, alpha=alpha)
                    units = f", {comp.n_clusters} source documents" if comp.n_clusters else ""
                    text = (f"{need} (σ seed {math.sqrt(comp.seed):.4g}, σ doc {math.sqrt(comp.doc):.4g}, "
                            f"σ res {math.sqrt(comp.res):.4g}{units})" if need else
                            f"none ≤ 256: document variance alone exceeds it (σ doc {math.sqrt(comp.doc):.4g}); "
                            "more documents needed")
                cells[(row, seeds_col)] = Cell(float(need) if comp and need else None, printed=text,
                                               source_file="(seeds needed)")
    caption = (f"What the design of `{run.id}` can detect. MDE₈₀: the smallest true difference (method − control) "
               "that its test detects with 80% power (two-sided t, the interval's own standard error and degrees of "
               f"freedom); the primary endpoint ({', '.join(sorted(primary)) or 'the single row'}) at α = 0.05, "
               f"the {m} secondary per-row tests at Holm's first level α/{m or 1} (conservative). "
               + (f"Seeds for {target:g}: the fewest seeds whose design detects a difference of {target:g} with 80% "
                  "power on these documents, from the variance components measured here (σ seed, σ doc, σ res); "
                  "document variance does not shrink with seeds." if target else ""))
    return Table(run.id.replace("run_", "design_", 1), f"Design of {run.title}: power of each comparison", caption,
                 run.row_header, list(run.rows), out_cols, cells, run.decimals, False, "design", list(run.runs))
