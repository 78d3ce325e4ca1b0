"""The leaderboard's definition: a file in the repo (results/leaderboard/board.yaml) naming the suites, tasks,
data (by content hash, with how to rebuild it), limits and the metric of each column, plus its entries
(results/leaderboard/entries/<name>.json, one per model, never rewritten).

A model enters only when it was scored on exactly the board's data: the same file (sha256) and the same number of
documents for every task. Nothing in either file is an absolute path, so the board travels with the repo. An entry
records what was scored by content (`weights`: the sha256 of each weight file), and, where its evaluation kept them,
the per-document scores, so that two entries can be compared document by document.

Ranking uses the board's own metric, as the paper does (bits per byte: the mean over the board's tasks, lower is
better); no rescaling, so a difference reads in the unit the paper reports. Each ranked entry carries the 95%
interval of its difference to the entry ranked above it: paired by document when both kept per-document scores
(fusebench/report/paired.py), otherwise the independent interval from the per-document standard errors (wider,
labelled so). An entry whose interval includes 0 shares the rank of the one above: the data cannot order them.
Reference models (`reference: true`, e.g. a public model that may have been trained on these texts) are listed
beside the ranking, not in it. A board mixing metrics ranks by the mean of normalised scores (0 = random baseline,
100 = best possible), without intervals.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fusebench import safe_yaml
from fusebench.errors import FusebenchError
from fusebench.names import Name

BOARD_DIR = Path("results") / "leaderboard"
RANKING = ("the mean of the board's metric over its tasks; an entry whose 95% interval against the entry above "
           "includes 0 shares that entry's rank")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rebuild(_Strict):
    """How to recreate the task's data: the corpus `corpus` of recipe `recipe` (a path relative to the repo)."""

    recipe: str
    corpus: str


class BoardTask(_Strict):
    sha256: str                   # of the file scored (a corpus's test.jsonl)
    documents: int                # how many of its documents are scored
    rebuild: Rebuild


class BoardSuite(_Strict):
    metric: str
    higher_is_better: bool
    random_baseline: float        # the score a random guess gets (normalises to 0)
    best: float                   # the best possible score (normalises to 100)
    limit: int | None = None      # lm-eval's --limit the entries are scored with
    max_length: int | None = None  # the scoring context (tokens); part of the protocol
    tasks: dict[Name, BoardTask]      # each task's corpus is rendered to <task>.yaml


class Board(_Strict):
    name: str
    description: str = ""
    ranking: str = RANKING
    suites: dict[str, BoardSuite]

    def columns(self) -> list[tuple[str, str]]:
        return [(s, t) for s, suite in self.suites.items() for t in suite.tasks]


class ColumnItems(_Strict):
    """One column's per-document scores as evaluate/items.py keeps them (bits per byte: [loglikelihood, bytes]
    per document), averaged over seeds."""

    doc_ids: list[str]
    values: list[float | list[float]]


class Entry(_Strict):
    name: str
    model: str                    # what was scored: a run's model (results/<run>/<model>), a hub id, a package
    kind: Literal["run", "directory", "hub", "gguf"]
    scores: dict[str, float]      # "suite/task" -> score in the board's metric
    data: dict[str, str]          # "suite/task" -> sha256 of the data scored
    documents: dict[str, int]     # "suite/task" -> documents scored
    seeds: list[int] = []
    added: str = ""
    stderr: dict[str, float] = {}          # "suite/task" -> per-document standard error (mean over seeds)
    items: dict[str, ColumnItems] = {}     # "suite/task" -> per-document scores, for paired intervals
    weights: dict[str, str] = {}           # what was scored, by content: weight file (or seed) -> sha256
    reference: bool = False                # listed beside the ranking, not ranked


def load_board(directory: Path) -> Board:
    path = directory / "board.yaml"
    try:
        text = safe_yaml.read_bounded(path, f"board file {path}").decode("utf-8")
        return Board.model_validate(safe_yaml.load(text, f"board file {path}"))
    except FileNotFoundError:
        raise FusebenchError(f"{path} does not exist: the leaderboard needs its board file (suites, tasks, data "
                             "hashes). Restore it from git, or point --board at a directory holding one.") from None
    except (yaml.YAMLError, ValidationError) as err:
        raise FusebenchError(f"{path} is not a valid board file: {err}. Fix the key named above.") from None


def load_entries(directory: Path) -> list[Entry]:
    entries = []
    for path in sorted((directory / "entries").glob("*.json")):
        try:
            entries.append(Entry.model_validate_json(path.read_text()))
        except ValidationError as err:
            raise FusebenchError(f"{path} is not a valid leaderboard entry: {err}. Remove it and add the model "
                                 "again with `fusebench leaderboard add`.") from None
    return entries


def entry_from_manifests(board: Board, name: str, model: str, kind: str, manifests: list[dict],
                         seeds: list[int] = (), items: list[dict | None] | None = None,
                         weights: dict[str, str] | None = None, reference: bool = False) -> Entry:
    """An entry from the manifests of one model's evaluations (one per seed): the mean score over seeds, checked
    against the board's data. Refuses (FusebenchError naming the task) an entry scored on other data. `items[i]` is
    the per-item record beside `manifests[i]` (evaluate/items.py), None where there is none."""
    items = list(items) if items is not None else [None] * len(manifests)
    scores: dict[str, list[float]] = {}
    stderrs: dict[str, list[float]] = {}
    per_doc: dict[str, list[ColumnItems | None]] = {}
    data: dict[str, str] = {}
    documents: dict[str, int] = {}
    for suite_name, suite in board.suites.items():
        for task, spec in suite.tasks.items():
            key = f"{suite_name}/{task}"
            for manifest, record in zip(manifests, items, strict=True):
                if manifest.get("suite") != suite_name:
                    continue
                info = (manifest.get("tasks") or {}).get(task)
                if info is None:
                    raise FusebenchError(f"{name} was not scored on {key}, a column of the board {board.name!r}. "
                                         "Score it on every board task (`fusebench leaderboard add`).")
                sha, docs = (info.get("data") or {}).get("sha256"), info.get("n_docs")
                context = (manifest.get("backend") or {}).get("max_length")
                if suite.max_length is not None and context != suite.max_length:
                    raise FusebenchError(f"{name} was scored on {key} with a {context}-token context; the board "
                                         f"scores with {suite.max_length}, so the numbers are not comparable.")
                if sha != spec.sha256 or docs != spec.documents:
                    raise FusebenchError(
                        f"{name} was scored on other data than the board for {key}: sha256 {str(sha)[:12]}…, "
                        f"{docs} documents; the board has {spec.sha256[:12]}…, {spec.documents} documents (rebuild: "
                        f"corpus {spec.rebuild.corpus!r} of {spec.rebuild.recipe}). Numbers on other data are not "
                        "comparable, so the entry is refused; add the model with `fusebench leaderboard add`, which "
                        "scores it on the board's data.")
                score = next((s for s in manifest.get("scores", []) if s["task"] == task
                              and s["metric"] == suite.metric), None)
                if score is None:
                    raise FusebenchError(f"{name}: no {suite.metric} for {key} in its manifest.")
                scale = 100.0 if _percent(suite.metric) else 1.0
                scores.setdefault(key, []).append(float(score["value"]) * scale)
                if score.get("stderr") is not None and math.isfinite(float(score["stderr"])):   # 1 document: NaN
                    stderrs.setdefault(key, []).append(float(score["stderr"]) * scale)
                per_doc.setdefault(key, []).append(_column_items(record, info, suite.metric, score["value"]))
                data[key], documents[key] = sha, docs
            if key not in scores:
                raise FusebenchError(f"{name} has no evaluation of suite {suite_name!r}, which the board ranks on.")
    mean = {k: sum(v) / len(v) for k, v in scores.items()}
    return Entry(name=name, model=model, kind=kind, scores=mean, data=data, documents=documents, seeds=list(seeds),
                 added=time.strftime("%Y-%m-%d"), reference=reference, weights=dict(weights or {}),
                 stderr={k: sum(v) / len(v) for k, v in stderrs.items() if len(v) == len(scores[k])},
                 items={k: merged for k, v in per_doc.items() if (merged := _seed_mean(v)) is not None})


def _column_items(record: dict | None, info: dict, metric: str, value: float) -> ColumnItems | None:
    """One task's per-document scores from an item record, only if they reproduce the manifest's score."""
    from fusebench.evaluate.items import aggregate

    entry = (((record or {}).get("tasks") or {}).get(info.get("lm_eval_task")) or {}).get("none") or {}
    values, doc_ids = (entry.get("metrics") or {}).get(metric), entry.get("doc_ids")
    if not values or not doc_ids or len(values) != len(doc_ids):
        return None
    again = aggregate(metric, values)
    if again is None or not math.isclose(again, float(value), rel_tol=1e-9, abs_tol=1e-12):
        return None
    return ColumnItems(doc_ids=[str(d) for d in doc_ids], values=values)


def _seed_mean(columns: list[ColumnItems | None]) -> ColumnItems | None:
    """Per-document scores averaged over seeds (same documents in each); for [loglikelihood, count] pairs the
    counts are the text's and equal, so the mean pair aggregates to the mean of the seeds' scores."""
    if not columns or any(c is None or c.doc_ids != columns[0].doc_ids for c in columns):
        return None
    n = len(columns)
    rows = zip(*(c.values for c in columns))
    values = [[sum(v[0] for v in row) / n, row[0][1]] if isinstance(row[0], list) else sum(row) / n for row in rows]
    return ColumnItems(doc_ids=columns[0].doc_ids, values=values)


def _percent(metric: str) -> bool:
    from fusebench.report.store import is_percent_metric

    return is_percent_metric(metric)


def write_entry(directory: Path, entry: Entry) -> Path:
    """Add one row; an existing name is refused (entries are never rewritten)."""
    path = directory / "entries" / f"{entry.name.replace('/', '__')}.json"
    if path.exists():
        raise FusebenchError(f"{entry.name!r} is already on the board ({path}). Give the new model another name "
                             "with --name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(entry.model_dump_json(indent=2))
    tmp.rename(path)
    return path


def normalised(suite: BoardSuite, score: float) -> float:
    return 100.0 * (score - suite.random_baseline) / (suite.best - suite.random_baseline)


def restrict(board: Board, suites: str | None) -> Board:
    """The board with only the comma-separated `suites` (all when None); FusebenchError naming the valid ones."""
    if suites is None:
        return board
    chosen = [x.strip() for x in suites.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in board.suites]
    if unknown or not chosen:
        raise FusebenchError(f"--suite {suites!r}: the board {board.name!r} has no suite "
                             f"{', '.join(map(repr, unknown)) or '(none given)'}; its suites are "
                             f"{', '.join(board.suites)} (comma-separated, e.g. --suite {next(iter(board.suites))}).")
    return board.model_copy(update={"suites": {k: board.suites[k] for k in chosen}})


def one_metric(board: Board) -> bool:
    """True when every column shares one metric and direction, so their mean is in that metric's unit."""
    return len({(s.metric, s.higher_is_better) for s in board.suites.values()}) == 1


def ranked(board: Board, entries: list[Entry]) -> list[dict]:
    """Rows in rank order, reference models last (rank None): name, each column's score, `score` (the mean of the
    board's metric; mean normalised score on a mixed board), `vs_above` (the Difference to the entry ranked above,
    stats.Difference or None) and `rank` (shared with the entry above when that interval includes 0)."""
    columns = [f"{s}/{t}" for s, t in board.columns()]
    uniform = one_metric(board)
    better_high = next(iter(board.suites.values())).higher_is_better if uniform else True

    def score(e: Entry) -> float:
        values = [e.scores[c] if uniform else normalised(board.suites[c.split("/")[0]], e.scores[c])
                  for c in columns]
        return sum(values) / len(values)

    by_name = {e.name: e for e in entries}
    rows = [{"name": e.name, "model": e.model, "seeds": e.seeds, "reference": e.reference,
             **{c: e.scores[c] for c in columns}, "score": score(e), "vs_above": None, "rank": None}
            for e in entries]
    rows.sort(key=lambda r: (r["reference"], -r["score"] if better_high else r["score"], r["name"]))
    above = None
    for i, r in enumerate(row for row in rows if not row["reference"]):
        if above is None:
            r["rank"] = 1
        else:
            r["vs_above"] = difference(board, by_name[r["name"]], by_name[above["name"]]) if uniform else None
            shown = r["vs_above"] is not None and r["vs_above"].excludes_zero
            r["rank"] = i + 1 if shown else above["rank"]
        above = r
    return rows


def difference(board: Board, entry: Entry, other: Entry):
    """entry − other in the mean of the board's metric with a 95% interval: paired by document when both kept
    per-document scores on the same documents, else independent from the per-document standard errors, else None."""
    from fusebench.report.paired import ItemScores, combine, task_difference
    from fusebench.report.stats import Difference

    columns = [(f"{s}/{t}", board.suites[s]) for s, t in board.columns()]
    parts = []
    for key, suite in columns:
        a, b = entry.items.get(key), other.items.get(key)
        if a is None or b is None:
            break
        scale = 100.0 if _percent(suite.metric) else 1.0
        part = task_difference(*(ItemScores(suite.metric, tuple(x.doc_ids), tuple(
            tuple(v) if isinstance(v, list) else v for v in x.values), scale) for x in (a, b)))
        if part is None:
            break
        parts.append(part)
    else:
        return combine(parts)
    if not all(key in entry.stderr and key in other.stderr for key, _ in columns):
        return None
    k = len(columns)
    mean = sum(entry.scores[key] - other.scores[key] for key, _ in columns) / k
    half = 1.959963984540054 * math.sqrt(sum(entry.stderr[key] ** 2 + other.stderr[key] ** 2
                                             for key, _ in columns)) / k
    return Difference(mean, mean - half, mean + half, 1, "independent")
