"""Weight merging baselines (linear, task arithmetic, TIES) through mergekit's Python API.

`merge_models(spec, out_dir)` checks that the models can be merged at all -- same architecture, same shapes, same
tokenizer -- from their config.json and tokenizer files *before* any tensor is loaded, then hands mergekit one
`MergeConfiguration` and writes a Hugging Face model directory (safetensors + tokenizer + mergekit_config.yml).

The three methods, with delta_i = model_i - base:
- linear:          sum_i w_i * model_i / sum_i w_i                      (no base model)
- task_arithmetic: base + sum_i w_i * delta_i                          (not normalised, as in mergekit)
- ties:            base + sign-consensus mean of the top-`density` fraction (by magnitude) of each w_i * delta_i

`merge_models` also takes a mergekit configuration as mergekit's own YAML states it (`merge_method`, `models`,
`slices`, `base_model`, `parameters`, ...), validated with mergekit's `MergeConfiguration`.

Replayable: the inputs are stored inside the merge directory (`inputs/<i>/`, hard links to their files where the
filesystem allows), and `mergekit_config.yml` names them by absolute path at the directory's final place (the
pipeline merges into `<dir>.partial` and renames it: `final_dir`), so `mergekit-yaml <dir>/mergekit_config.yml OUT`
(stock mergekit, no fusebench) rebuilds the same tensors from any working directory: mergekit resolves a relative
model path against the working directory, not the config file. The model card (README.md) names the same paths.
mergekit 0.1.5's GPT-NeoX definition requires the buffers `attention.bias`, `attention.masked_bias` and
`rotary_emb.inv_freq`, which transformers 5 no longer saves; an input missing them gets them in its stored copy
(`mergekit_buffers.safetensors` + a `model.safetensors.index.json` listing both files, with the values
transformers 4 computed) -- the input model itself is never touched, and mergekit runs unpatched.
Architectures: Llama and GPT-NeoX use mergekit's own definitions. MPT has no definition in mergekit 0.1.5; mergekit
then infers the layout from the tensor names, which works for transformers' MPT (pinned by a test).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusebench.errors import FusebenchError

METHODS = ("linear", "task_arithmetic", "ties")
# config.json keys that fix tensor shapes (names differ across families: MPT says d_model / n_layers / n_heads).
# model_type comes first so that mixing families is reported as such, not as a hidden-size mismatch.
SHAPE_KEYS = ("model_type", "hidden_size", "d_model", "num_hidden_layers", "n_layers", "num_attention_heads",
              "n_heads", "num_key_value_heads", "head_dim", "intermediate_size", "expansion_ratio", "vocab_size",
              "tie_word_embeddings")
INPUTS_DIR = "inputs"
BUFFERS_FILE = "mergekit_buffers.safetensors"
# Where a mergekit configuration names models (besides `tokenizer_source`, which may also be "union" / "base").
_REF_KEYS = ("model", "base_model")


class MergeModel(BaseModel):
    """One model to merge and its per-model parameters."""

    model_config = ConfigDict(extra="forbid")
    path: str
    weight: float = 1.0
    density: float | None = Field(default=None, gt=0.0, le=1.0)  # TIES only: fraction of each task vector kept


class MergeSpec(BaseModel):
    """A merge as a recipe states it; a plain string in `models` means that path with weight 1."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["linear", "task_arithmetic", "ties"]
    models: list[MergeModel] = Field(min_length=1)
    base_model: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    normalize: bool | None = None  # None: mergekit's default (linear, ties: True; task_arithmetic: False)

    @field_validator("models", mode="before")
    @classmethod
    def _paths_as_models(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, (str, Path)) else v for v in value]
        return value

    @model_validator(mode="after")
    def _method_needs(self) -> "MergeSpec":
        if self.method == "linear" and self.base_model is not None:
            raise ValueError("linear merging averages the models and takes no base_model; remove it, or use "
                             "task_arithmetic / ties, which add task vectors (model - base) to the base")
        if self.method != "linear" and self.base_model is None:
            raise ValueError(f"{self.method} adds task vectors (model - base) to a base model: set base_model")
        if self.method != "ties" and any(m.density is not None for m in self.models):
            raise ValueError(f"density is a TIES parameter; {self.method} does not use it")
        return self

    def all_paths(self) -> list[str]:
        return ([self.base_model] if self.base_model else []) + [m.path for m in self.models]


def parse_merge_spec(raw: MergeSpec | Mapping[str, Any], where: str = "merge") -> MergeSpec:
    """Validate a recipe's merge section; errors name the key path under `where`."""
    if isinstance(raw, MergeSpec):
        return raw
    try:
        return MergeSpec.model_validate(dict(raw))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join([where, *map(str, e['loc'])])}: {e['msg']}" for e in err.errors())
        raise FusebenchError(f"invalid merge settings: {problems}. Methods: {', '.join(METHODS)}.") from None


def merge_models(spec: MergeSpec | Mapping[str, Any], out_dir: str | Path, seed: int | None = None,
                 final_dir: str | Path | None = None) -> Path:
    """Merge into a Hugging Face model directory `out_dir` and return it. `final_dir`: where `out_dir` will be
    moved once finished (the saved config and model card name the inputs there); default `out_dir` itself.

    `spec` is fusebench's short form (`method`, `models`, `base_model`, ...) or a mergekit configuration
    (recognised by its `merge_method` key) whose model references are directories or hub ids.
    """
    config = dict(spec) if isinstance(spec, Mapping) and "merge_method" in spec else _mergekit_config(
        parse_merge_spec(spec))
    validate_mergekit_config(config)
    paths = referenced_models(config)
    check_mergeable(paths)
    # mergekit takes seconds to import and is an optional extra; only pay for it when merging.
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = {p: _store_input(p, out_dir / INPUTS_DIR / str(i)) for i, p in enumerate(paths)}
    final = Path(os.path.abspath(final_dir or out_dir))
    to_run = map_references(config, lambda ref: str((out_dir / stored[ref]).resolve()) if stored[ref] else ref)
    replay = MergeConfiguration.model_validate(
        map_references(config, lambda ref: str(final / stored[ref]) if stored[ref] else ref))
    source = (f"# Replay with stock mergekit from any directory ({final / INPUTS_DIR} holds the merged models):\n"
              f"#   mergekit-yaml {final / 'mergekit_config.yml'} OUT_DIR\n" + replay.to_yaml() + "\n")
    # mergekit's own card would name the paths it ran from (inside out_dir, possibly `.partial`): written here
    # from the replay configuration instead
    run_merge(MergeConfiguration.model_validate(to_run), str(out_dir),
              MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=seed, write_model_card=False))
    from mergekit.card import generate_card

    (out_dir / "README.md").write_text(generate_card(replay, source, name=final.name), encoding="utf-8")
    (out_dir / "mergekit_config.yml").write_text(source, encoding="utf-8")
    return out_dir


def validate_mergekit_config(config: Mapping[str, Any], where: str = "merge") -> None:
    """FusebenchError unless `config` is a valid mergekit configuration (mergekit's own schema, plus no unknown
    top-level keys, which mergekit itself would silently ignore)."""
    try:
        from mergekit.config import MergeConfiguration
    except ImportError:
        raise FusebenchError("weight merging needs mergekit, an optional dependency: pip install "
                             "'fusebench[merge]' (or mergekit==0.1.5).") from None
    unknown = sorted(set(config) - set(MergeConfiguration.model_fields))
    if unknown:
        raise FusebenchError(f"invalid merge settings: {where}.{unknown[0]} is not a mergekit configuration key "
                             f"(mergekit's keys: {', '.join(MergeConfiguration.model_fields)}).")
    try:
        MergeConfiguration.model_validate(dict(config))
    except ValidationError as err:
        e = err.errors()[0]
        raise FusebenchError(f"invalid merge settings: {'.'.join([where, *map(str, e['loc'])])}: {e['msg']} "
                             "(checked against mergekit's MergeConfiguration).") from None
    except (RuntimeError, ValueError) as err:  # mergekit's own model validators raise RuntimeError
        raise FusebenchError(f"invalid merge settings in {where}: {err} (checked against mergekit's "
                             "MergeConfiguration).") from None


def referenced_models(config: Mapping[str, Any]) -> list[str]:
    """The model references of a mergekit configuration in order of appearance, without repeats."""
    found: list[str] = []
    map_references(config, lambda ref: found.append(ref) or ref)
    return list(dict.fromkeys(found))


def map_references(config: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a mergekit configuration with every model reference `ref` replaced by `fn(ref)`."""
    if isinstance(config, Mapping):
        out = {}
        for key, value in config.items():
            if isinstance(value, str) and (key in _REF_KEYS or (key == "tokenizer_source"
                                                                and value not in ("union", "base"))):
                out[key] = fn(value)
            elif key != "parameters":
                out[key] = map_references(value, fn)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(config, list):
        return [map_references(v, fn) for v in config]
    return copy.deepcopy(config)


def _store_input(path: str, dest: Path) -> str | None:
    """Store input `path` under `dest` (hard links, else copies) complete for mergekit; returns `dest` relative to
    the merge directory, or None for a hub id (mergekit fetches those itself)."""
    src = Path(path)
    if not src.is_dir():
        return None
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*"))
    if _config_dict(str(src)).get("model_type") == "gpt_neox":
        _add_gpt_neox_buffers(dest)
    return f"{INPUTS_DIR}/{dest.name}"


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)
    return dst


def _add_gpt_neox_buffers(model_dir: Path) -> None:
    """Give a stored GPT-NeoX copy the per-layer buffers mergekit 0.1.5 requires, when its weights lack them.

    Values as transformers 4 saved them: the causal mask `attention.bias` (bool, lower triangular over
    max_position_embeddings), `attention.masked_bias` (-1e9) and the rotary `inv_freq` of the rotated dims.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    index_path = model_dir / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
    else:
        with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
            weight_map = {k: "model.safetensors" for k in f.keys()}
    cfg = _config_dict(str(model_dir))
    heads, hidden, positions = cfg["num_attention_heads"], cfg["hidden_size"], cfg["max_position_embeddings"]
    rot_dims = int((hidden // heads) * cfg.get("rotary_pct", cfg.get("partial_rotary_factor", 1.0)))
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rotary_emb_base", 10000))
    per_layer = {
        "attention.bias": torch.tril(torch.ones(positions, positions, dtype=torch.bool)).view(1, 1, positions,
                                                                                             positions),
        "attention.masked_bias": torch.tensor(-1e9),
        "attention.rotary_emb.inv_freq": 1.0 / (theta ** (torch.arange(0, rot_dims, 2).float() / rot_dims)),
    }
    missing = {f"gpt_neox.layers.{i}.{name}": t.clone() for i in range(cfg["num_hidden_layers"])
               for name, t in per_layer.items() if f"gpt_neox.layers.{i}.{name}" not in weight_map}
    if not missing:
        return
    save_file(missing, str(model_dir / BUFFERS_FILE), metadata={"format": "pt"})
    weight_map.update({k: BUFFERS_FILE for k in missing})
    index_path.unlink(missing_ok=True)  # may be a hard link to the input's own index: write a new file
    index_path.write_text(json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))


def check_mergeable(paths: list[str]) -> None:
    """FusebenchError unless every model has the first one's architecture, shapes and tokenizer."""
    configs = {p: _config_dict(p) for p in dict.fromkeys(paths)}
    first, *others = configs
    fix = ("Weight merging combines tensors element by element, so every model needs the same architecture, "
           "shapes and token ids. Models that differ can be combined by the output ensemble (same tokenizer) or "
           "by FuseLLM (any tokenizers) instead.")
    for other in others:
        for key in SHAPE_KEYS:
            a, b = configs[first].get(key), configs[other].get(key)
            if a != b:
                raise FusebenchError(f"cannot merge {first} and {other}: their config.json differ in {key!r} "
                                     f"({a!r} vs {b!r}). {fix}")
    from fusebench.models.tokenizers import load_tokenizer

    first_vocab = load_tokenizer(first).get_vocab()
    for other in others:
        if load_tokenizer(other).get_vocab() != first_vocab:
            raise FusebenchError(f"cannot merge {first} and {other}: their tokenizers differ (the same token id "
                                 f"means different strings, so embedding rows cannot be combined). {fix}")


def _config_dict(path: str) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError) as err:
        raise FusebenchError(f"cannot read the config of merge input {path!r}: {err}. Give a Hugging Face model "
                             "directory (config.json + safetensors + tokenizer) or a cached hub id.") from None


def _mergekit_config(spec: MergeSpec) -> dict[str, Any]:
    """The MergeConfiguration dict (mergekit's YAML schema) for `spec`."""
    models = []
    for m in spec.models:
        params: dict[str, Any] = {"weight": m.weight}
        if spec.method == "ties":
            params["density"] = 1.0 if m.density is None else m.density
        models.append({"model": m.path, "parameters": params})
    config: dict[str, Any] = {"merge_method": spec.method, "models": models, "dtype": spec.dtype,
                              "out_dtype": spec.dtype}
    if spec.base_model:
        config["base_model"] = spec.base_model
    if spec.normalize is not None:
        config["parameters"] = {"normalize": spec.normalize}
    return config
