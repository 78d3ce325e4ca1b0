"""Single-seed comparisons paired by item: a method and its control scored on the same documents.

Each evaluation may keep its per-item scores beside its results (`<suite>.items.json.gz`, fusebench/evaluate/items.py).
When both sides of a comparison have them for a task, on the same doc ids, the difference gets a paired standard
error; otherwise (no item file, other documents, items that do not reproduce the stored score) there is none and the
caller falls back to the independent interval (stats.py).

Every statistic is a smooth function of per-document sums, so one formula covers both kinds (the delta method: the
estimate's linearisation z_i per document, var = n / (n − 1) · Σ z_i², the same n / (n − 1) as the ratio stderr of
fusebench/evaluate/runner.py):

* a mean metric (acc, acc_norm, exact_match, pass@1; in percent where the table prints percent): d_i = m_i − c_i,
  difference d̄, z_i = (d_i − d̄) / n, so var = sd(d)² / n, the paired t-test's standard error;
* a ratio metric: R = Σ nll_i / Σ count_i with nll_i = −loglikelihood_i, the same count_i (bytes, words) for both
  models, since they score the same text; value g(R) with g(R) = R / ln 2 (bits per byte) or exp(R) (perplexities).
  Difference g(R_m) − g(R_c), z_i = [g'(R_m)(nll_m,i − R_m count_i) − g'(R_c)(nll_c,i − R_c count_i)] / Σ count.
  For bits per byte that is Σ(nll_m,i − nll_c,i) / (ln 2 · Σ bytes_i) with the ratio estimator's standard error.

A task's interval uses the t quantile with n − 1 degrees of freedom; an average over tasks (independent documents)
is the mean of the task differences, variance Σ var_t / k², with Welch–Satterthwaite degrees of freedom.

Where the run records which source document each test document was cut from (`clusters.json`, written when a corpus
is scored in passages: fusebench/data/provenance.py), the z_i are summed per cluster first: var = G / (G − 1) ·
Σ_g (Σ_{i∈g} z_i)², the cluster-robust (sandwich) variance, with G − 1 degrees of freedom (G clusters).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from scipy import stats

from fusebench.errors import FusebenchError
from fusebench.evaluate.items import RATIO_METRICS, aggregate, items_path, read_items
from fusebench.extract.store import sha256_file
from fusebench.report.stats import Difference


@dataclass(frozen=True)
class ItemScores:
    """One model's per-item values of one task's metric (and filter), as stored."""

    metric: str
    doc_ids: tuple
    values: tuple
    scale: float            # 100 where the table prints percent
    clusters: tuple | None = None   # each document's source document (clusters.json), None: independent documents


@dataclass(frozen=True)
class TaskDifference:
    mean: float
    var: float               # variance of the difference (delta method)
    n: int                   # items paired
    units: int | None = None  # independent units (clusters) where the documents are clustered, else n


@lru_cache(maxsize=256)
def _load(source_file: str) -> dict | None:
    """The item record beside a stored `<suite>.json`, None when there is none. A record whose sha256 differs from
    the one the manifest names is an error: it is not the record of these results."""
    path = items_path(Path(source_file))
    if not path.exists():
        return None
    manifest = path.with_name(path.name.removesuffix(".items.json.gz") + ".manifest.json")
    try:
        named = (json.loads(manifest.read_text()).get("items_file") or {}) if manifest.exists() else {}
    except json.JSONDecodeError:
        named = {}
    if named.get("sha256") and named["sha256"] != sha256_file(path):
        raise FusebenchError(f"{path} does not match the sha256 that {manifest} records for it (items_file), so it "
                             "is not the per-item record of these results. Restore it from the run that wrote it, "
                             "or delete it (the report then uses the independent interval).")
    try:
        return read_items(path)
    except (OSError, ValueError) as err:
        raise FusebenchError(f"{path} cannot be read as a per-item record ({err}). Restore it from the run that "
                             "wrote it, or delete it (the report then uses the independent interval).") from None


@lru_cache(maxsize=64)
def _run_clusters(run_dir: str) -> dict:
    path = Path(run_dir) / "clusters.json"
    return json.loads(path.read_text()) if path.exists() else {}


def document_clusters(source_file: str, task: str, doc_ids: tuple) -> tuple | None:
    """Each document's cluster for `task` of the run holding `source_file`, None when the run records none. The
    record must describe the very test file the evaluation scored (its sha256 in the evaluation's manifest)."""
    src = Path(source_file)
    run_dir = next((p for p in src.parents if (p / "run.json").exists()), None)
    record = _run_clusters(str(run_dir)).get(task) if run_dir is not None else None
    if not record:
        return None
    manifest = src.with_name(src.name.removesuffix(".json") + ".manifest.json")
    tasks = json.loads(manifest.read_text()).get("tasks", {}) if manifest.exists() else {}
    scored = [(t.get("data") or {}).get("sha256") for t in tasks.values() if t.get("lm_eval_task") == task]
    of_doc = record.get("of_doc") or []
    if scored != [record.get("test_sha256")] or not all(str(d).isdigit() and int(d) < len(of_doc)
                                                          for d in doc_ids):
        raise FusebenchError(f"{run_dir / 'clusters.json'} does not describe the test documents that {manifest} "
                             f"scored for {task} (another test file's sha256, or other document ids): it is not "
                             "this run's record. Publish the run again from its workdir.")
    return tuple(of_doc[int(d)] for d in doc_ids)


def clear_cache() -> None:
    _load.cache_clear()
    _run_clusters.cache_clear()


def item_scores(source_file: str, task: str, metric: str, filter_name: str, value: float,
                percent: bool) -> ItemScores | None:
    """The stored items of one table cell, only if they reproduce its value (to 1e-9): items of another metric or
    aggregation (lambada's perplexity, corpus-level F1) never enter a paired difference."""
    record = _load(source_file)
    entry = ((record or {}).get("tasks", {}).get(task) or {}).get(filter_name) or {}
    values = (entry.get("metrics") or {}).get(metric)
    doc_ids = entry.get("doc_ids")
    if not values or not doc_ids or len(values) != len(doc_ids) or len(set(map(str, doc_ids))) != len(doc_ids):
        return None
    scale = 100.0 if percent else 1.0
    recomputed = aggregate(metric, values)
    if recomputed is None or not math.isclose(recomputed * scale, value, rel_tol=1e-9, abs_tol=1e-12):
        return None
    return ItemScores(metric, tuple(map(str, doc_ids)), tuple(tuple(v) if isinstance(v, list) else v
                                                             for v in values), scale,
                      document_clusters(source_file, task, tuple(doc_ids)))


def task_difference(method: ItemScores, control: ItemScores) -> TaskDifference | None:
    """method − control paired by doc id; None unless both scored the same documents (and, for a ratio metric, the
    same counts per document) and there are two or more."""
    if method.metric != control.metric or set(method.doc_ids) != set(control.doc_ids) or len(method.doc_ids) < 2:
        return None
    order = {d: i for i, d in enumerate(control.doc_ids)}
    m = list(method.values)
    c = [control.values[order[d]] for d in method.doc_ids]
    n = len(m)
    if method.metric in RATIO_METRICS:
        if any(a[1] != b[1] for a, b in zip(m, c)):
            return None
        total = sum(a[1] for a in m)
        if total == 0:
            return None
        r_m, r_c = sum(-a[0] for a in m) / total, sum(-b[0] for b in c) / total
        if method.metric == "bits_per_byte":
            g = (lambda r: r / math.log(2)), (lambda r: 1 / math.log(2))
        else:
            g = math.exp, math.exp
        mean = g[0](r_m) - g[0](r_c)
        z = [(g[1](r_m) * (-a[0] - r_m * a[1]) - g[1](r_c) * (-b[0] - r_c * b[1])) / total for a, b in zip(m, c)]
    else:
        d = [method.scale * (a - b) for a, b in zip(m, c)]
        mean = sum(d) / n
        z = [(x - mean) / n for x in d]
    if control.clusters is None:
        return TaskDifference(mean, n / (n - 1) * sum(x * x for x in z), n)
    sums: dict = {}
    for k, x in zip((control.clusters[order[d]] for d in method.doc_ids), z):
        sums[k] = sums.get(k, 0.0) + x
    g = len(sums)
    if g < 2:
        return None
    return TaskDifference(mean, g / (g - 1) * sum(x * x for x in sums.values()), n, g)


def combine(parts: list[TaskDifference]) -> Difference:
    """The difference of a task (one part) or of an average over tasks, with its 95% t interval (basis items)."""
    k = len(parts)
    mean = sum(p.mean for p in parts) / k
    var = sum(p.var for p in parts) / k ** 2
    n_items = sum(p.n for p in parts)
    if var == 0:
        return Difference(mean, mean, mean, 1, "items", n_items, se=0.0, df=math.inf)
    df = sum(p.var for p in parts) ** 2 / sum(p.var ** 2 / ((p.units or p.n) - 1) for p in parts)
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    return Difference(mean, mean - half, mean + half, 1, "items", n_items, se=math.sqrt(var), df=df)


def items_difference(method: list[ItemScores | None], control: list[ItemScores | None]) -> Difference | None:
    """The paired difference over tasks (method[i] and control[i]: task i's items), None when any task cannot be
    paired, so a table never mixes paired and unpaired parts in one interval."""
    parts = []
    for m, c in zip(method, control, strict=True):
        part = task_difference(m, c) if m is not None and c is not None else None
        if part is None:
            return None
        parts.append(part)
    return combine(parts) if parts else None
