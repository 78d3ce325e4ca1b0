"""Knowledge available and knowledge captured: does a run's world give fusion something to transfer, and how much of
it did each method take?

*Available*: each source's and KD teacher's bits per byte minus the target's, per domain (negative: the teacher
knows more than the target there). Measured in the run itself, from the evaluations it already made; `fusebench run`
prints it and publishes it as `knowledge.json` beside `run.json`.

*Captured*: for every continual method with teachers (KD, FuseLLM, ...) and its control (CLM from the same model),
(method − control) as a share of (best of the method's own teachers − control), per domain. 100% means the student
became as good as its best teacher on that domain; the share is left empty where no teacher beats the control by
MIN_ROOM (then there was nothing, or too little to measure, to capture). Seeded models enter as their mean over seeds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from fusebench.report.runs import controls_and_methods
from fusebench.report.store import ResultsStore, run_models
from fusebench.report.tables import Cell, Table, _slug, primary_rows

METRIC = "bits_per_byte"
AVERAGE = "average"
log = logging.getLogger("fusebench")


def _means(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
    """model -> domain -> bits per byte (mean over seeds), plus the equal-weight average over the domains."""
    rows = rows[(rows["metric"] == METRIC) & ~rows["is_average"].astype(bool)]
    out: dict[str, dict[str, float]] = {}
    for (model, task), group in rows.groupby(["model", "task"]):
        out.setdefault(model, {})[task] = float(group["value"].mean())
    domains = sorted({t for per in out.values() for t in per})
    for per in out.values():
        if all(d in per for d in domains):
            per[AVERAGE] = sum(per[d] for d in domains) / len(domains)
    return out


def _holders(models: dict[str, dict]) -> list[str]:
    """Every model some other model learns from (sources, KD teachers, experts), in recipe order."""
    seen: list[str] = []
    for info in models.values():
        seen += [t for t in info.get("teachers") or [] if t not in seen]
    return seen


def knowledge_available(rows: pd.DataFrame, models: dict[str, dict], target: str | None) -> dict:
    """{"metric", "target", "gaps": {holder: {domain: holder − target}}} from one run's tidy rows."""
    means = _means(rows)
    base = means.get(target or "", {})
    holders = _holders(models)
    gaps = {h: {d: means[h][d] - v for d, v in base.items() if d in means[h]} for h in holders if h in means}
    missing = [h for h in holders if h not in means] + ([target] if target and not base else [])
    return {"metric": METRIC, "target": target, "gaps": gaps, "not_evaluated": missing}


def write_knowledge(run_dir: Path, models: dict[str, dict], target: str | None) -> dict:
    """Write `<run_dir>/knowledge.json` from the evaluations already there and log each gap."""
    found = knowledge_available(ResultsStore(run_dir.parent).run_frame(run_dir), models, target)
    if not found["gaps"] and not found["not_evaluated"]:
        return found                                  # nobody learns from anybody: nothing to record
    (run_dir / "knowledge.json").write_text(json.dumps(found, indent=2))
    for holder, per in found["gaps"].items():
        log.info("knowledge available: %s − %s, bits per byte: %s", holder, target,
                 ", ".join(f"{d} {g:+.4f}" for d, g in per.items()))
    if found["not_evaluated"]:
        log.warning("knowledge available: %s not evaluated in bits per byte; add them to evaluate.models (suite "
                    "perplexity) to measure what the teachers know", ", ".join(found["not_evaluated"]))
    return found


# A share needs a room to be a share of. The miniatures are designed to resolve 0.002 bits per byte (issue 19); a
# share is printed only where that resolution is at most a fifth of the room, so a share moves by at most ~20 points
# for a difference at the edge of what the design detects. Smaller rooms gave noise over noise: KD's −0.0025 over a
# −0.0004 room printed as 595%, a λ = 0.5 row's +0.0727 over a −0.0030 room as −2464%.
MIN_ROOM = 0.01


def captured_share(method: float, control: float, best: float) -> float | None:
    """(method − control) / (best − control); None where the best teacher beats the control by less than
    MIN_ROOM bits per byte (or not at all)."""
    room = best - control
    return None if not room <= -MIN_ROOM + 1e-12 else (method - control) / room


def _table(run_id: str, rows: pd.DataFrame, models: dict[str, dict]) -> Table | None:
    roles = dict(zip(rows["model"], rows["role"]))
    target = next((m for m, r in roles.items() if r == "target"), None)
    means = _means(rows)
    found = knowledge_available(rows, models, target)
    if not found["gaps"] or target not in means:
        return None
    domains = [d for d in means[target] if d != AVERAGE] + ([AVERAGE] if AVERAGE in means[target] else [])
    cells: dict[tuple[str, str], Cell] = {}
    columns = []
    for holder, per in found["gaps"].items():
        col = f"{holder} − {target}"
        columns.append(col)
        for d, gap in per.items():
            cells[(d, col)] = Cell(gap, signed=True, run_id=run_id)
    for method, control in controls_and_methods(rows):
        teachers = [t for t in models.get(method, {}).get("teachers") or [] if t in means]
        if method not in means or control not in means or not teachers:
            continue
        col = f"{method}: share captured"
        columns.append(col)
        for d in domains:
            if not all(d in means[m] for m in (method, control, *teachers)):
                continue
            # the average row's best is the mean of the per-domain bests: what picking the right teacher for each
            # domain would give, the room a fusion of all of them has
            best = (sum(min(means[t][x] for t in teachers) for x in domains if x != AVERAGE) / (len(domains) - 1)
                    if d == AVERAGE else min(means[t][d] for t in teachers))
            delta, room = means[method][d] - means[control][d], best - means[control][d]
            share = captured_share(means[method][d], means[control][d], best)
            text = (f"{100 * share:.1f}%" if share is not None else "— (no teacher beats " + control + ")"
                    if room > -1e-9 else f"— (room under {MIN_ROOM})")   # a tolerance: equal means differ
            cells[(d, col)] = Cell(share, printed=f"{text} ({delta:+.4f} of {room:+.4f})", run_id=run_id)
    caption = (f"Knowledge available in run {run_id}: each source's / teacher's bits per byte minus the target's "
               f"({target}) per domain (negative: it knows more than the target there). Knowledge captured: "
               "(method − control) as a share of (best of the method's teachers − control), with both differences "
               f"in brackets (no share where that room is under {MIN_ROOM} bits per byte, 5x the 0.002 the design "
               "resolves); seeded models as their mean over seeds. The average row is the equal-weight mean over the "
               "domains; its best teacher is the mean of the per-domain bests.")
    return Table(f"knowledge_{_slug(run_id)}", f"{run_id}: knowledge available and captured (bits per byte)",
                 caption, "domain", domains, columns, cells, 4, False, "knowledge", [run_id])


def knowledge_tables(frame: pd.DataFrame, results: Path) -> list[Table]:
    """One table per reproduced run whose models learn from others and whose evaluations measure bits per byte."""
    primary = primary_rows(frame)
    tables = []
    for run_id in sorted(set(primary["run_id"])) if not primary.empty else []:
        models = run_models(Path(results) / run_id)
        if not any(info.get("teachers") for info in models.values()):
            continue
        table = _table(run_id, primary[primary["run_id"] == run_id], models)
        if table is not None:
            tables.append(table)
    return tables
