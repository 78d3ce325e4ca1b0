"""The leaderboard: every reproduced model (sources, target, baselines, fused, and models added later) ranked on
the suites it was evaluated on.

A benchmark column is the model's mean over the suite's tasks (the metric each task is shown with in the tables).
Suites point different ways (accuracy up, bits per byte down), so they are never averaged together: the ranking is
by **mean rank** (rank 1 = best on that benchmark, ranks averaged over the benchmarks a model has), and a separate
"Avg. ↑" column averages only the higher-is-better benchmarks, like the paper's averages. A model evaluated in
several runs shows its latest evaluation of each suite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fusebench.errors import FusebenchError
from fusebench.report.store import ResultsStore
from fusebench.report.tables import METRIC_LABELS, primary_rows

MEAN_RANK = "mean rank"
AVG_UP = "Avg. ↑"


@dataclass
class Leaderboard:
    frame: pd.DataFrame                  # rank, model, role, runs, one column per benchmark, mean rank, Avg. ↑
    benchmarks: list[str]
    higher_is_better: dict[str, bool]
    decimals: dict[str, int]             # per benchmark: 2 for percentages, 4 for bits per byte and the like
    metrics: dict[str, str]              # per benchmark: what its numbers are, for axis and panel labels

    def to_markdown(self) -> str:
        cols = list(self.frame.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in self.frame.iterrows():
            lines.append("| " + " | ".join(_fmt(row[c], self.decimals.get(c, 2)) for c in cols) + " |")
        arrows = ", ".join(f"{b} {'↑' if self.higher_is_better[b] else '↓'}" for b in self.benchmarks)
        return ("\n".join(lines) + f"\n\nBenchmarks ({arrows}): each model's mean over the suite's tasks. Ranked by "
                f"{MEAN_RANK} over benchmarks (1 = best); {AVG_UP} averages only higher-is-better benchmarks.\n")


def _fmt(value, decimals: int) -> str:
    if isinstance(value, float):
        return "—" if value != value else f"{value:.{decimals}f}"
    return str(value)


def build_leaderboard(frame: pd.DataFrame, suites: list[str] | None = None) -> Leaderboard:
    rows = primary_rows(frame)
    if suites:
        rows = rows[rows["suite"].isin(suites)]
    if rows.empty:
        wanted = f" on suites {', '.join(suites)}" if suites else ""
        raise FusebenchError(f"no reproduced results{wanted} in the results store, so there is nothing to rank. "
                             "Evaluate models first (`fusebench eval MODEL --suite ...` or `fusebench run RECIPE`), "
                             "or `fusebench leaderboard add MODEL --suite ...`.")
    rows = rows.assign(date=rows["date"].fillna(0.0))
    # Recipes reuse generic names ("target", "clm"): a name that several recipes use is a different model in each,
    # so it is qualified by its recipe ("tiny/target"); re-running one recipe (a new run id) still replaces it.
    # Runs published by `fusebench run` are named <recipe>-<8 hex>; other run ids name no recipe and are left alone.
    family = rows["run_id"].str.extract(r"^(.*)-[0-9a-f]{8}$", expand=False)
    shared = rows.assign(family=family).groupby("model")["family"].nunique()
    clash = (rows["model"].map(shared) > 1) & family.notna()
    rows = rows.assign(model=rows["model"].where(~clash, family + "/" + rows["model"]))
    # the latest evaluation of each (model, suite): a re-evaluated model replaces its older numbers
    latest = rows.groupby(["model", "suite"])[["date", "run_id"]].max().reset_index()
    rows = rows.merge(latest, on=["model", "suite", "date", "run_id"])
    scores = rows.pivot_table(index="model", columns="suite", values="value", aggfunc="mean")
    benchmarks = sorted(scores.columns)
    up = {s: bool(rows.loc[rows["suite"] == s, "higher_is_better"].iloc[0]) for s in benchmarks}
    ranks = pd.DataFrame({s: scores[s].rank(ascending=not up[s], method="min") for s in benchmarks})
    board = pd.DataFrame({"model": scores.index})
    info = rows.groupby("model").agg(role=("role", lambda r: next((x for x in r if x), "")),
                                     runs=("run_id", lambda r: ",".join(sorted(set(r)))))
    board = board.join(info, on="model")
    for s in benchmarks:
        board[s] = scores[s].values
    board[MEAN_RANK] = ranks.mean(axis=1).values
    higher = [s for s in benchmarks if up[s]]
    if higher:
        board[AVG_UP] = scores[higher].mean(axis=1, skipna=False).values
    board = board.sort_values([MEAN_RANK, "model"]).reset_index(drop=True)
    board.insert(0, "rank", board[MEAN_RANK].rank(method="min").astype(int))
    decimals = {s: 2 if (rows.loc[rows["suite"] == s, "unit"] == "%").all() else 4 for s in benchmarks}
    metrics = {s: " / ".join(sorted({METRIC_LABELS.get(m, m) for m in rows.loc[rows["suite"] == s, "metric"]}))
               for s in benchmarks}
    return Leaderboard(board, benchmarks, up, decimals, metrics)


def write_leaderboard(board: Leaderboard, out: Path) -> list[Path]:
    from fusebench.report.plots import leaderboard_bars

    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text("## Leaderboard\n\n" + board.to_markdown(), encoding="utf-8")
    board.frame.to_csv(out / "leaderboard.csv", index=False)
    return [out / "leaderboard.md", out / "leaderboard.csv", *leaderboard_bars(board, out / "leaderboard")]


def _suites(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _board_suites(rows: pd.DataFrame) -> tuple[list[str], dict[str, Path]]:
    """What the board's models were evaluated on, read from their manifests: suite:benchmark specs for
    `evaluate_model`, and the perplexity corpora (directories of the test.jsonl files scored), so a new model is
    scored on exactly the same data."""
    specs: dict[str, None] = {}
    corpora: dict[str, Path] = {}
    for source, suite in sorted(set(zip(rows["source_file"], rows["suite"]))):
        manifest_path = Path(source).with_name(f"{suite}.manifest.json")
        tasks = json.loads(manifest_path.read_text()).get("tasks", {}) if manifest_path.exists() else {}
        if not isinstance(tasks, dict) or not tasks:
            specs[suite] = None
            continue
        for benchmark, info in tasks.items():
            specs[f"{suite}:{benchmark}"] = None
            data = (info or {}).get("data") or {}
            if suite == "perplexity" and data.get("path"):
                corpora[benchmark] = Path(data["path"]).parent
    whole = {s for s in specs if ":" not in s}    # a suite seen without task detail is evaluated whole
    return [s for s in specs if s.split(":")[0] not in whole or ":" not in s], corpora


def add_model(model: str, name: str | None, suites: list[str] | None, results: Path, workdir: str | None,
              limit: int | None) -> str:
    """Evaluate one new model on the leaderboard's suites (or `suites`) and store it as run `leaderboard-<name>`;
    the models already on the board are not evaluated again."""
    from fusebench.models.load import check_source

    check_source(model)  # a missing path says so before anything about the board's suites or corpora
    existing = primary_rows(ResultsStore(results).frame())
    name = name or Path(model.rstrip("/")).name
    if not existing.empty and name in set(existing["model"]):
        raise FusebenchError(f"a model named {name!r} is already on the leaderboard (results in {results}). Give the "
                             "new one another name with --name.")
    specs, corpora = _board_suites(existing) if not existing.empty else ([], {})
    if suites:
        on_board = {s.split(":")[0] for s in specs}
        specs = [s for s in specs if s.split(":")[0] in suites] + [s for s in suites if s not in on_board]
    if not specs:
        raise FusebenchError("the leaderboard is empty, so it has no suites to evaluate a new model on. Name them: "
                             f"`fusebench leaderboard add {model} --suite commonsense`.")
    from fusebench.evaluate.api import evaluate_model   # heavy (torch, lm-eval): only when adding

    evaluate_model(model, specs, name=name, limit=limit, workdir=workdir or "runs/eval", results_dir=results,
                   run_id=f"leaderboard-{name}", corpora=corpora)
    return name


def main(args) -> int:
    results, out = Path(args.results), Path(args.out)
    suites = _suites(args.suite)
    if args.action == "add":
        if not args.model:
            raise FusebenchError("`fusebench leaderboard add` needs a model: a model directory or hub id, e.g. "
                                 "`fusebench leaderboard add runs/tiny/models/fusellm --name tiny-fusellm`.")
        add_model(args.model, args.name, suites, results, args.workdir, args.limit)
    board = build_leaderboard(ResultsStore(results).frame(), suites)
    paths = write_leaderboard(board, out)
    print(board.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
