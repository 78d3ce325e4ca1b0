"""Weight merging baselines (linear, task arithmetic, TIES) through mergekit's Python API.

`merge_models(spec, out_dir)` checks that the models can be merged at all -- same architecture, same shapes, same
tokenizer -- from their config.json and tokenizer files *before* any tensor is loaded, then hands mergekit one
`MergeConfiguration` and writes a Hugging Face model directory (safetensors + tokenizer + mergekit_config.yml).

The three methods, with delta_i = model_i - base:
- linear:          sum_i w_i * model_i / sum_i w_i                      (no base model)
- task_arithmetic: base + sum_i w_i * delta_i                          (not normalised, as in mergekit)
- ties:            base + sign-consensus mean of the top-`density` fraction (by magnitude) of each w_i * delta_i

Architectures: Llama and GPT-NeoX use mergekit's own definitions (GPT-NeoX with the fix in
`_allow_missing_gpt_neox_buffers`). MPT has no definition in mergekit 0.1.5; mergekit then infers the layout from
the tensor names, which works for transformers' MPT (pinned by a test), so MPT is merged that way rather than refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusebench.errors import FusebenchError

METHODS = ("linear", "task_arithmetic", "ties")
# config.json keys that fix tensor shapes (names differ across families: MPT says d_model / n_layers / n_heads).
# model_type comes first so that mixing families is reported as such, not as a hidden-size mismatch.
SHAPE_KEYS = ("model_type", "hidden_size", "d_model", "num_hidden_layers", "n_layers", "num_attention_heads",
              "n_heads", "num_key_value_heads", "head_dim", "intermediate_size", "expansion_ratio", "vocab_size",
              "tie_word_embeddings")
# GPT-NeoX buffers that mergekit 0.1.5's gpt-neox.json lists as required tensors (see below).
_GPT_NEOX_BUFFERS = (".attention.bias", ".attention.masked_bias", ".attention.rotary_emb.inv_freq")


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


def merge_models(spec: MergeSpec | Mapping[str, Any], out_dir: str | Path, seed: int | None = None) -> Path:
    """Merge the models of `spec` into a Hugging Face model directory `out_dir` and return it."""
    spec = parse_merge_spec(spec)
    check_mergeable(spec.all_paths())
    # mergekit takes seconds to import and is an optional extra; only pay for it when merging.
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError:
        raise FusebenchError("weight merging needs mergekit, an optional dependency: pip install "
                             "'fusebench[merge]' (or mergekit==0.1.5).") from None

    _allow_missing_gpt_neox_buffers()
    config = MergeConfiguration.model_validate(_mergekit_config(spec))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_merge(config, str(out_dir), MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=seed))
    return out_dir


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


def _allow_missing_gpt_neox_buffers() -> None:
    """Mark GPT-NeoX's non-parameter buffers optional in mergekit's architecture table (idempotent).

    mergekit 0.1.5's gpt-neox.json lists `attention.bias`, `attention.masked_bias` and `rotary_emb.inv_freq` as
    required tensors. They are buffers that old transformers versions saved in checkpoints; transformers 5 no longer
    saves them (Pythia checkpoints on the hub still have them), so mergekit stops with "Tensor ... required but not
    present". Optional weights that no input has are skipped by mergekit's planner, and where present they are still
    merged, so marking them optional is the smallest fix that keeps both kinds of checkpoint working.
    """
    from mergekit.architecture.json_definitions import NAME_TO_ARCH

    archs = NAME_TO_ARCH.get("GPTNeoXForCausalLM", [])
    for i, arch in enumerate(archs):
        module_def = arch.modules["default"]
        definition = module_def.architecture.definition
        weights = [w.model_copy(update={"optional": True}) if w.name.endswith(_GPT_NEOX_BUFFERS) else w
                   for w in definition.layer_templates.weights]
        templates = definition.layer_templates.model_copy(update={"weights": weights})
        module = module_def.architecture.model_copy(
            update={"definition": definition.model_copy(update={"layer_templates": templates})})
        module_def = module_def.model_copy(update={"architecture": module})
        archs[i] = arch.model_copy(update={"modules": {"default": module_def}})
