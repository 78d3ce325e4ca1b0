"""The leaderboard's definition: a file in the repo (results/leaderboard/board.yaml) naming the suites, tasks,
data (by content hash, with how to rebuild it), limits and the metric of each column, plus its entries
(results/leaderboard/entries/<name>.json, one per model, never rewritten).

A model enters only when it was scored on exactly the board's data: the same file (sha256) and the same number of
documents for every task. Nothing in either file is an absolute path, so the board travels with the repo.

Ranking follows the Open LLM Leaderboard: every score is normalised between the task's random baseline (0) and the
best possible score (100), and models are ranked by the mean of their normalised scores. Accuracy in percent:
100·(acc − random)/(100 − random). Bits per byte (lower is better; 0 is perfect): the random baseline is a uniform
guess over the 256 byte values, 8 bits per byte, so normalised = 100·(8 − bpb)/8; a model worse than uniform scores
below 0, as on the Open LLM Leaderboard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fusebench import safe_yaml
from fusebench.errors import FusebenchError
from fusebench.names import Name

BOARD_DIR = Path("results") / "leaderboard"
RANKING = ("mean of normalised scores (Open LLM Leaderboard): each task scaled so its random baseline is 0 and a "
           "perfect score 100; bits per byte: 100·(8 − bpb)/8, 8 bits per byte being a uniform guess over bytes")


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


class Entry(_Strict):
    name: str
    model: str                    # what was scored: a run's model (results/<run>/<model>), a hub id, a package
    kind: Literal["run", "directory", "hub", "gguf"]
    scores: dict[str, float]      # "suite/task" -> score in the board's metric
    data: dict[str, str]          # "suite/task" -> sha256 of the data scored
    documents: dict[str, int]     # "suite/task" -> documents scored
    seeds: list[int] = []
    added: str = ""


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
                         seeds: list[int] = ()) -> Entry:
    """An entry from the manifests of one model's evaluations (one per seed): the mean score over seeds, checked
    against the board's data. Refuses (FusebenchError naming the task) an entry scored on other data."""
    scores: dict[str, list[float]] = {}
    data: dict[str, str] = {}
    documents: dict[str, int] = {}
    for suite_name, suite in board.suites.items():
        for task, spec in suite.tasks.items():
            key = f"{suite_name}/{task}"
            for manifest in manifests:
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
                value = next((s["value"] for s in manifest.get("scores", []) if s["task"] == task
                              and s["metric"] == suite.metric), None)
                if value is None:
                    raise FusebenchError(f"{name}: no {suite.metric} for {key} in its manifest.")
                scores.setdefault(key, []).append(float(value) * (100.0 if _percent(suite.metric) else 1.0))
                data[key], documents[key] = sha, docs
            if key not in scores:
                raise FusebenchError(f"{name} has no evaluation of suite {suite_name!r}, which the board ranks on.")
    return Entry(name=name, model=model, kind=kind, scores={k: sum(v) / len(v) for k, v in scores.items()},
                 data=data, documents=documents, seeds=list(seeds), added=time.strftime("%Y-%m-%d"))


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


def ranked(board: Board, entries: list[Entry]) -> list[dict]:
    """Rows in rank order: name, each column's score, the mean normalised score."""
    rows = []
    for e in entries:
        norm = [normalised(board.suites[s], e.scores[f"{s}/{t}"]) for s, t in board.columns()]
        rows.append({"name": e.name, "model": e.model, "seeds": e.seeds,
                     **{f"{s}/{t}": e.scores[f"{s}/{t}"] for s, t in board.columns()},
                     "average": sum(norm) / len(norm)})
    rows.sort(key=lambda r: (-r["average"], r["name"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def board_json(board: Board, rows: list[dict]) -> str:
    return json.dumps({"board": board.model_dump(), "rows": rows}, indent=2)
