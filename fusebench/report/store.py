"""The results store: every stored number, reported or reproduced, as one tidy pandas DataFrame.

Layout on disk (the contract with the evaluation layer):
    results/reported/                          the paper's numbers (see reported.py); never written by a run
    results/<run_id>/run.json                  optional: the roles of the run's models
    results/<run_id>/<model>/<suite>.json      lm-eval's results dict, as `simple_evaluate` returns it
    results/<run_id>/<model>/<suite>.manifest.json   model path and hash, recipe, seeds, versions, role, method
    results/<run_id>/<model>/seed-<s>/<suite>(.manifest).json   a seed-dependent model, trained once per seed
    results/<run_id>/<model>/[seed-<s>/]<suite>.items.json.gz   optional: per-item scores (report/paired.py)
    results/<run_id>/checksums.json            size and sha256 of every file above (reported/ too): checked
                                               before the run is read (fusebench/checksums.py)

`value` is in the unit the paper prints: accuracy-like metrics (acc, exact_match, pass@k, ...) in percent, bits per
byte and perplexities as they are. The store is append-only: `add_run` refuses a run id that already exists.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusebench.checksums import SEAL, check_sealed, seal
from fusebench.errors import FusebenchError
from fusebench.evaluate.chat_judge import WORD_SCORES
from fusebench.evaluate.items import items_path, write_items
from fusebench.report.reported import REPORTED_RUN_ID, reported_rows

COLUMNS = ["run_id", "provenance", "table", "model", "role", "method", "suite", "task", "metric", "filter",
           "value", "stderr", "higher_is_better", "is_average", "unit", "row_label", "col_label", "printed",
           "date", "source_file",
           # what a caption must name: training seed (None: shared by all seeds), items scored of the task's
           # original count, data source; and how the model was made (run.json), for paired comparisons
           "seed", "n_items", "n_original", "data_source", "init", "n_teachers",
           # true where generated code ran in the weaker `rlimits` mode, outside the sandbox (manifest code_sandbox)
           "unsandboxed",
           # a score that is a word (chat_judge's "not judged"): value is NaN, the table prints the word
           "text"]

# lm-eval reports these as fractions; the paper prints them in percent
PERCENT_METRICS = {"acc", "acc_norm", "acc_mutual_info", "exact_match", "em", "f1", "contains", "mc1", "mc2"}
LEADERBOARD_DIR = "leaderboard"     # results/leaderboard/ holds the board (board.py), not a run
LOWER_IS_BETTER = {"bits_per_byte", "byte_perplexity", "word_perplexity", "perplexity", "ter", "loss"}
# a run.json may name roles in the plural ("sources": [...]); the table code wants one word per model
_SINGULAR = {"sources": "source", "baselines": "baseline", "experts": "expert", "teachers": "teacher",
             "targets": "target", "bases": "base"}


def is_percent_metric(metric: str) -> bool:
    return metric in PERCENT_METRICS or metric.startswith("pass@")


@dataclass
class Evaluation:
    """One model's lm-eval results on one suite, with the manifest that says where they came from."""

    model: str
    suite: str
    results: dict
    manifest: dict = field(default_factory=dict)
    items: dict | None = None     # per-item scores (fusebench/evaluate/items.py), for paired comparisons


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FusebenchError(f"{path} is not valid JSON ({err}). It is a stored result; restore it from the run "
                             "that wrote it, or move it out of the results directory.") from None
    if not isinstance(data, dict):
        raise FusebenchError(f"{path} should hold a JSON object (lm-eval's results dict or a manifest).")
    return data


def run_models(run_dir: Path) -> dict[str, dict]:
    """model -> {"init": ..., "teachers": [...]} from a run.json that `fusebench run` wrote ({} otherwise)."""
    path = run_dir / "run.json"
    models = (_read_json(path).get("models") or {}) if path.exists() else {}
    return {n: info for n, info in models.items() if isinstance(info, dict)}


def run_roles(run_dir: Path) -> dict[str, str]:
    """model -> role from results/<run>/run.json: {"roles": {"target": "m", "sources": ["a", "b"]}} or
    {"models": {"m": {"role": "target"}}} (or {"models": {"m": "target"}})."""
    path = run_dir / "run.json"
    if not path.exists():
        return {}
    data = _read_json(path)
    roles: dict[str, str] = {}
    for role, names in (data.get("roles") or {}).items():
        for name in [names] if isinstance(names, str) else names or []:
            roles[name] = _SINGULAR.get(role, role)
    for name, info in (data.get("models") or {}).items():
        role = info.get("role") if isinstance(info, dict) else info
        if role:
            roles[name] = _SINGULAR.get(role, role)
    return roles


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan   # lm-eval writes "N/A" for stderrs it could not compute


def lm_eval_rows(results: dict, *, run_id: str, model: str, suite: str, role: str | None, method: str | None,
                 source_file: str) -> list[dict]:
    """Tidy rows from one lm-eval results dict. Group aggregates (BBH's overall score, ...) are kept and flagged
    `is_average`; the report recomputes averages itself, as the paper does."""
    per_task = results.get("results")
    if not isinstance(per_task, dict):
        raise FusebenchError(f"{source_file} has no 'results' object, so it is not lm-eval's output. Store the "
                             "dict that lm_eval.simple_evaluate returns (without 'samples').")
    groups = set(results.get("groups") or {}) | {g for g, subtasks in (results.get("group_subtasks") or {}).items()
                                                  if subtasks}
    higher = results.get("higher_is_better") or {}
    rows = []
    samples = results.get("n-samples") or {}
    for task, metrics in per_task.items():
        counts = samples.get(task) or {}
        for key, raw in metrics.items():
            if "," not in key or key.split(",", 1)[0].endswith("_stderr"):
                continue
            metric, filter_name = key.split(",", 1)
            value, text = _as_float(raw), raw if raw in WORD_SCORES else None
            if math.isnan(value) and text is None:
                continue
            stderr = _as_float(metrics.get(f"{metric}_stderr,{filter_name}"))
            scale = 100.0 if is_percent_metric(metric) else 1.0
            up = (higher.get(task) or {}).get(metric)
            rows.append(dict(
                run_id=run_id, provenance="reproduced", table=None, model=model, role=role, method=method,
                suite=suite, task=task, metric=metric, filter=filter_name, value=value * scale,
                stderr=stderr * scale, higher_is_better=bool(up) if up is not None else metric not in LOWER_IS_BETTER,
                is_average=task in groups, unit="%" if scale == 100.0 else "", row_label=task, col_label=model,
                printed=None, date=_as_float(results.get("date")), source_file=source_file, seed=None,
                n_items=counts.get("effective"), n_original=counts.get("original"), data_source=None, init=None,
                n_teachers=None, text=text))
    return rows


def _seed_of(folder: Path) -> int:
    try:
        return int(folder.name.removeprefix("seed-"))
    except ValueError:
        raise FusebenchError(f"{folder}: a seed folder is named seed-<integer> (e.g. seed-0); rename or move it "
                             "out of the results store.") from None


def check_run(run_dir: Path) -> None:
    """A stored run is read only when its files are exactly those sealed when it was written (checksums.json:
    size and sha256 of each): an edited number, an added or a removed file stops the reader, naming the file."""
    problems = check_sealed(run_dir)
    if problems is None:
        raise FusebenchError(f"{run_dir} carries no {SEAL}, so nothing vouches for the results in it (stored before "
                             "fusebench sealed results, or the record was deleted). If you trust its files as they "
                             f"are, `fusebench verify --adopt {run_dir.parent}` records them; otherwise move it out "
                             "of the results store and re-run the recipe that made it.")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise FusebenchError(f"the stored results {run_dir} changed since they were written: {shown}. Restore the "
                             "files from the run that wrote them, or move the run out of the results store and run "
                             "its recipe again (a changed number is never read).")


class ResultsStore:
    """Reads `results/` (reported set and reproduced runs) and adds new runs without touching existing ones.
    Every run is checked against its seal (`check_run`) before any of its files is read."""

    def __init__(self, root: str | Path = "results"):
        self.root = Path(root)

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name != LEADERBOARD_DIR)

    def _reproduced_rows(self, run_dir: Path) -> list[dict]:
        roles, made = run_roles(run_dir), run_models(run_dir)
        rows: list[dict] = []
        for model_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
            seed_dirs = sorted((p for p in model_dir.glob("seed-*") if p.is_dir()), key=lambda p: _seed_of(p))
            for folder, seed in [(model_dir, None), *((d, _seed_of(d)) for d in seed_dirs)]:
                for path in sorted(folder.glob("*.json")):
                    if path.name.endswith(".manifest.json"):
                        continue
                    suite = path.stem
                    manifest_path = path.with_name(f"{suite}.manifest.json")
                    manifest = _read_json(manifest_path) if manifest_path.exists() else {}
                    info = made.get(model_dir.name, {})
                    found = lm_eval_rows(_read_json(path), run_id=run_dir.name, model=model_dir.name, suite=suite,
                                         role=manifest.get("role") or roles.get(model_dir.name),
                                         method=manifest.get("method"), source_file=str(path))
                    for row in found:
                        row.update(seed=seed, data_source=manifest.get("data_source"), init=info.get("init"),
                                   n_teachers=len(info.get("teachers") or []),
                                   unsandboxed=bool((manifest.get("code_sandbox") or {}).get("unsandboxed")))
                    rows += found
        return rows

    def run_frame(self, run_dir: Path) -> pd.DataFrame:
        """One reproduced run's rows (also a run still being staged under another name)."""
        return pd.DataFrame(self._reproduced_rows(Path(run_dir)), columns=COLUMNS)

    def frame(self) -> pd.DataFrame:
        """Every stored number, one row each, in the columns of `COLUMNS`."""
        rows: list[dict] = []
        for run_id in self.run_ids():
            run_dir = self.root / run_id
            check_run(run_dir)
            if run_id == REPORTED_RUN_ID:
                rows += reported_rows(run_dir)
            else:
                rows += self._reproduced_rows(run_dir)
        return pd.DataFrame(rows, columns=COLUMNS)

    def add_run(self, run_id: str, evaluations: Iterable[Evaluation],
                roles: Mapping[str, str | list[str]] | None = None) -> Path:
        """Write a new run: every evaluation's results and manifest, and run.json when `roles` are given
        (e.g. {"target": "tiny-target", "sources": ["a", "b"], "fused": "tiny-fusellm"}). Refuses an existing
        run id, so stored results are never overwritten; the whole run appears at once or not at all."""
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise FusebenchError(f"run id {run_id!r} is not a valid directory name; use letters, digits, - and _.")
        if run_id == REPORTED_RUN_ID:
            raise FusebenchError(f"run id {run_id!r} is reserved for the paper's reported numbers "
                                 f"({self.root / run_id}); give the reproduced run another id.")
        dest = self.root / run_id
        if dest.exists():
            raise FusebenchError(f"run {run_id!r} already exists in {self.root}; stored results are never "
                                 "overwritten. Use a new run id (e.g. add a date or seed suffix).")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=self.root))
        try:
            for ev in evaluations:
                model_dir = staging / ev.model
                model_dir.mkdir(exist_ok=True)
                (model_dir / f"{ev.suite}.json").write_text(json.dumps(ev.results, indent=2, default=str))
                if ev.items is not None:
                    write_items(ev.items, items_path(model_dir / f"{ev.suite}.json"))
                manifest = {"run_id": run_id, "model_name": ev.model, "suite": ev.suite, **ev.manifest}
                (model_dir / f"{ev.suite}.manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            if roles:
                (staging / "run.json").write_text(json.dumps({"run_id": run_id, "roles": dict(roles)}, indent=2))
            seal(staging)
            os.rename(staging, dest)   # atomic on one filesystem: readers never see half a run
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dest
