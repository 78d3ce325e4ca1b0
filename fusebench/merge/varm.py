"""VaRM (FuseChat's variation-ratio merge) as a stock mergekit `linear` merge with per-tensor weights.

FuseChat fine-tunes one pivot once per source; VaRM merges those N targets with a weight per parameter matrix from
how much each target moved it away from the pivot:

    d_i(W) = sum over the elements of (W_i - W_pivot)^2          (target i's squared change of matrix W)
    w_i(W) = d_i(W) / sum_j d_j(W)                               (uniform 1/N where no target changed W)
    W_merged = sum_i w_i(W) * W_i

mergekit has no VaRM, but its `linear` method takes a weight per model that may be a list of `{filter, value}`
conditions resolved per tensor name (mergekit.config.evaluate_setting: the first condition whose filter is a
substring of the tensor name wins). So VaRM is two steps: compute every w_i(W) here (one tensor at a time, float64),
then hand mergekit a `linear` configuration that names each tensor; the tensors are mergekit's own output, and the
saved `mergekit_config.yml` replays them bit for bit with stock `mergekit-yaml`. Filters are listed longest first,
so a tensor name that is a substring of another (a suffix match) can never catch the longer name's weights; a final
filterless condition gives 1/N to tensors the pivot does not hold (mergekit's GPT-NeoX buffers). `varm_weights.json`
beside the config records the pivot and every weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusebench.errors import FusebenchError

WEIGHTS_FILE = "varm_weights.json"


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (sharded or not)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return {k: model_dir / f for k, f in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open

    out: dict[str, Path] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as handle:
            out.update({k: f for k in handle.keys()})
    if not out:
        raise FusebenchError(f"VaRM merge input {model_dir} holds no safetensors weights; give a Hugging Face model "
                             "directory saved with safetensors (fusebench's model stages write those).")
    return out


def _read(files: dict[str, Path], name: str):
    from safetensors import safe_open

    with safe_open(str(files[name]), framework="pt") as handle:
        return handle.get_tensor(name)


def varm_weights(pivot: Path, targets: list[Path]) -> dict[str, list[float]]:
    """w_i(W) for every tensor W of the pivot: each target's share of the summed squared change."""
    import torch

    pivot_files = _tensor_files(Path(pivot))
    target_files = [_tensor_files(Path(t)) for t in targets]
    for t, files in zip(targets, target_files):
        missing = sorted(set(pivot_files) - set(files))
        if missing:
            raise FusebenchError(f"VaRM: target {t} lacks the pivot's tensor {missing[0]!r} ({len(missing)} missing);"
                                 " every target must be a fine-tune of the pivot with its architecture.")
    out: dict[str, list[float]] = {}
    for name in pivot_files:
        base = _read(pivot_files, name)
        if not base.is_floating_point():  # masks and other integer buffers are not trained
            out[name] = [1.0 / len(targets)] * len(targets)
            continue
        base = base.to(torch.float64)
        change = [float((_read(files, name).to(torch.float64) - base).square().sum()) for files in target_files]
        total = sum(change)
        out[name] = [c / total for c in change] if total > 0 else [1.0 / len(targets)] * len(targets)
    return out


def varm_config(targets: list[str], weights: dict[str, list[float]], dtype: str = "float32") -> dict[str, Any]:
    """The mergekit `linear` configuration whose per-tensor weights are `weights` (see the module docstring)."""
    names = sorted(weights, key=lambda n: (-len(n), n))  # longest first: a substring never shadows a longer name
    models = []
    for i, target in enumerate(targets):
        conditions: list[dict[str, Any]] = [{"filter": n, "value": weights[n][i]} for n in names]
        conditions.append({"value": 1.0 / len(targets)})
        models.append({"model": target, "parameters": {"weight": conditions}})
    return {"merge_method": "linear", "models": models, "parameters": {"normalize": True}, "dtype": dtype,
            "out_dtype": dtype}


def varm_merge(pivot: str | Path, targets: list[str | Path], out_dir: str | Path, dtype: str = "float32") -> Path:
    """Merge the pivot's fine-tunes `targets` by VaRM into the model directory `out_dir` (via stock mergekit)."""
    from fusebench.merge.merge import check_mergeable, merge_models

    if len(targets) < 2:
        raise FusebenchError(f"VaRM merges two or more fine-tunes of one pivot; got {len(targets)} target(s).")
    from fusebench.models.hub import resolve_pretrained

    # VaRM reads every tensor itself, so hub ids become their local snapshots (offline: the HF cache)
    pivot, *targets = [resolve_pretrained(str(p)) for p in (pivot, *targets)]
    check_mergeable([str(pivot), *map(str, targets)])
    weights = varm_weights(Path(pivot), [Path(t) for t in targets])
    out = merge_models(varm_config([str(t) for t in targets], weights, dtype), out_dir)
    record = {"method": "varm", "pivot": str(pivot), "targets": [str(t) for t in targets],
              "weights": {n: weights[n] for n in sorted(weights)}}
    (out / WEIGHTS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return out
