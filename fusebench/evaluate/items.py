"""Per-item scores, kept beside an evaluation's results so that two models scored on the same documents can be
compared item by item (a paired interval: fusebench/report/paired.py).

`<suite>.items.json.gz` (gzip, JSON):

    {"format": 1, "tasks": {task: {filter: {"doc_ids": [...], "metrics": {metric: [value, ...]}}}}}

Each metric's list is aligned with `doc_ids`. A value is either the number lm-eval averages (acc, acc_norm,
exact_match, pass@1, ...) or, for the corpus-level ratio metrics, the [loglikelihood, count] pair lm-eval keeps per
document (count: UTF-8 bytes for bits per byte and byte perplexity, words for word perplexity). Everything else lm-eval
logs per sample (the document, prompts, responses) is dropped: the file stays a few bytes per item.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from fusebench.evaluate.offline_data import write_atomic

FORMAT = 1
SUFFIX = ".items.json.gz"
RATIO_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")


def items_path(results_path: Path) -> Path:
    """`<suite>.items.json.gz` beside `<suite>.json`."""
    return results_path.with_name(results_path.name.removesuffix(".json") + SUFFIX)


def _number(value) -> bool:
    return isinstance(value, (int, float))   # bool included: some tasks score an item True / False


def _item(metric: str, value):
    """The compact per-item value, or None when it is neither a number nor (for a ratio metric) a number pair."""
    if metric in RATIO_METRICS:
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value):
            return [float(value[0]), float(value[1])]
        return None
    return float(value) if _number(value) else None


def item_records(samples: dict) -> dict:
    """The compact record of lm-eval's logged samples ({task: [sample, ...]}, `log_samples=True`)."""
    tasks: dict = {}
    for task, docs in samples.items():
        for doc in docs:
            entry = tasks.setdefault(task, {}).setdefault(doc.get("filter", "none"), {"doc_ids": [], "metrics": {}})
            index = len(entry["doc_ids"])
            entry["doc_ids"].append(doc["doc_id"])
            for metric in doc.get("metrics") or []:
                values = entry["metrics"].setdefault(metric, [None] * index)
                values.append(_item(metric, doc.get(metric)))
            for values in entry["metrics"].values():   # a metric a document lacks stays aligned (None)
                values.extend([None] * (index + 1 - len(values)))
    return {"format": FORMAT, "tasks": tasks}


def write_items(items: dict, path: Path) -> Path:
    """Gzipped JSON, written atomically (a reader sees the old file or the new one); mtime 0 keeps the bytes
    identical for identical scores."""
    return write_atomic(path, gzip.compress(json.dumps(items, separators=(",", ":")).encode(), mtime=0))


def read_items(path: Path) -> dict:
    """The record at `path` (raises OSError / ValueError on an unreadable file; callers decide what that means)."""
    items = json.loads(gzip.decompress(path.read_bytes()))
    if not isinstance(items, dict) or items.get("format") != FORMAT or not isinstance(items.get("tasks"), dict):
        raise ValueError(f"{path} is not a fusebench per-item record (format {FORMAT})")
    return items


def aggregate(metric: str, values: list) -> float | None:
    """lm-eval's aggregate of a metric recomputed from its per-item values (None where an item is missing):
    mean for per-item scores, -Σll / Σcount / ln 2 for bits per byte, exp(-Σll / Σcount) for the perplexities."""
    if not values or any(v is None for v in values):
        return None
    if metric in RATIO_METRICS:
        total = sum(c for _, c in values)
        if total == 0:
            return None
        ratio = sum(ll for ll, _ in values) / total       # lm-eval's weighted_mean: Σll / Σcount
        return -ratio / math.log(2) if metric == "bits_per_byte" else math.exp(-ratio)
    return sum(values) / len(values)
