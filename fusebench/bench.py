"""`fusebench bench`: the speed and size targets, each a ratio against a baseline measured in the same run.

The measurements live in the repository's `bench/` folder (`bench_align.py`, `bench_core.py`, `bench_parallel.py`, `bench_store.py`); this command runs
them all once and prints one table (or one JSON object, keys documented in bench/README.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from fusebench.errors import FusebenchError

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"

# key -> (target, "max" if the figure must be at most the target, "min" if at least)
TARGETS = {
    "dtw_speedup": (100.0, "min"),
    "store_bytes_per_token_per_model": (32.0, "max"),
    "store_bytes_per_token_vocab_152k": (32.0, "max"),  # Qwen2's 151,936 ids at k = 10 (bench_store.py)
    "store_fusion_loss_rel_change": (1e-3, "max"),      # what companding the log-probs does to the fusion loss
    "extraction_vs_forward_ratio": (1.05, "max"),
    "fusion_step_time_ratio": (1.05, "max"),
    "fusion_step_peak_memory_ratio": (1.1, "max"),
    "align_2proc_speedup": (1.7, "min"),   # the align stage on 2 processes vs 1 (bench_parallel.py), same output
}


def _load(name: str):
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        raise FusebenchError(f"{path} is missing: `fusebench bench` runs the benchmarks of a source checkout "
                             "(install with `pip install -e .` from the repository).")
    spec = importlib.util.spec_from_file_location(f"fusebench_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_all(quick: bool = False) -> dict:
    align, core, par, store = (_load(n) for n in ("bench_align", "bench_core", "bench_parallel", "bench_store"))
    results: dict = {}
    for fn in (align.bench_dtw, align.bench_alignment_quality, core.bench_store_bytes, store.bench_store_vocab,
               core.bench_extraction,
               core.bench_fusion_step, par.bench_align_parallel):
        results.update(fn(quick=quick))
    results["targets"] = {k: {"target": t, "kind": kind, "value": results.get(k),
                              "met": results.get(k) is not None and (results[k] >= t if kind == "min" else results[k] <= t)}
                          for k, (t, kind) in TARGETS.items()}
    return results


def quiet_stdout(fn):
    """Run fn with file descriptor 1 pointing at stderr, so that what libraries print (DeepSpeed logs its accelerator
    choice to stdout when accelerate imports it) cannot corrupt a machine-readable stdout; returns fn's result."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        return fn()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(args) -> int:
    results = quiet_stdout(lambda: run_all(quick=args.quick)) if args.json else run_all(quick=args.quick)
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print(f"{'figure':<36} {'value':>10} {'target':>10}  met")
        for key, t in results["targets"].items():
            sign = ">=" if t["kind"] == "min" else "<="
            value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
            print(f"{key:<36} {value:>10} {sign + format(t['target'], 'g'):>10}  {'yes' if t['met'] else 'NO'}")
        print(quality_table(results))
    return 0 if all(t["met"] for t in results["targets"].values()) else 1


QUALITY_RULES = {"dtw": "dtw (ends checked)", "offsets": "offsets", "dtw_blocks": "dtw blocks alone (before)",
                 "reference_em": "reference 1:1 EM guard", "reference_mined": "reference 1:1 MinED guard"}


def quality_table(results: dict) -> str:
    """Coverage and precision of each transfer rule, MPT -> Llama-2, on prose and on code (bench/README.md)."""
    lines = ["", "alignment MPT -> Llama-2: coverage (target positions receiving a source distribution) / precision "
             "(of those, source token ends at the same character)",
             f"{'rule':<30} {'prose cov':>10} {'prose prec':>11} {'code cov':>10} {'code prec':>10}"]
    for rule, label in QUALITY_RULES.items():
        cells = [f"{100 * results[f'align_{kind}_{rule}_{fig}']:.1f}%" for kind in ("prose", "code")
                 for fig in ("coverage", "precision")]
        lines.append(f"{label:<30} {cells[0]:>10} {cells[1]:>11} {cells[2]:>10} {cells[3]:>10}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(type("A", (), {"json": True, "quick": False})()))
