"""The output ensemble: N causal LMs that share one tokenizer, averaged in probability space.

At every position the ensemble predicts p(x) = sum_i w_i * softmax(logits_i)(x), and returns its logarithm as
`logits` (computed with logsumexp in float32, so a member that is very confident cannot underflow the mix). Because
log-probabilities are already normalised, softmax(logits) == p and everything downstream -- lm-eval's
log-likelihood, rolling perplexity, greedy `generate()` -- reads the ensemble exactly as it reads any other model.

On disk an ensemble is a small directory (see `save_ensemble`): `config.json` with `model_type:
"fusebench_ensemble"`, the member paths and weights, and the members' shared tokenizer files; no weights are copied.
Importing this module registers the config and model with `AutoConfig` / `AutoModelForCausalLM`, so
`AutoModelForCausalLM.from_pretrained(ensemble_dir)` (and lm-eval's HFLM given that path) works without remote code.

Members with different vocabularies are refused: probabilities over different vocabularies cannot be averaged
position by position (token id 17 means different strings in each). Combining those is what FuseLLM's alignment
(fusebench.align) is for.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
from dataclasses import field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel)
from transformers.modeling_outputs import CausalLMOutputWithPast

from fusebench.errors import FusebenchError

MODEL_TYPE = "fusebench_ensemble"
# Files that make up a Hugging Face tokenizer; whichever of them the first member has are copied.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")
# Config keys different architectures use for their context length (MPT says max_seq_len).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx")
# transformers 5.24 renamed the cache in model outputs and generate()'s model kwargs from `past_key_values` to
# `cache`; generate() only feeds a cache back into forward() when the output carries it under its own name.
_OUTPUT_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class EnsembleConfig(PretrainedConfig):
    """Which models to average and with what weights.

    `members` are stored in config.json relative to the ensemble directory when they are local directories (so a
    run folder can be moved as a whole), and verbatim when they are hub ids. After loading they are absolute.
    """

    model_type = MODEL_TYPE
    members: list[str] = field(default_factory=list)
    weights: list[float] | None = None  # None = uniform
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    use_cache: bool = True

    def normalized_weights(self) -> list[float]:
        return _normalize_weights(self.weights, len(self.members))


class EnsembleCache:
    """One key/value cache per member, carried through `generate()` as the ensemble's `past_key_values`."""

    def __init__(self, member_caches: list):
        self.member_caches = member_caches

    def get_seq_length(self, layer_idx: int = 0) -> int:
        first = self.member_caches[0]
        return first.get_seq_length() if first is not None else 0


class EnsembleForCausalLM(PreTrainedModel, GenerationMixin):
    """log(sum_i w_i softmax(logits_i)) as a causal LM; the members are ordinary transformers models."""

    config_class = EnsembleConfig
    base_model_prefix = "ensemble"
    main_input_name = "input_ids"

    def __init__(self, config: EnsembleConfig, members: Sequence[PreTrainedModel] = ()):
        super().__init__(config)
        # post_init() initialises weights; members are attached afterwards so their trained weights are never
        # touched by it.
        self.post_init()
        if len(members) != len(config.members):
            raise FusebenchError(
                f"the ensemble config lists {len(config.members)} members but {len(members)} models were given; "
                "load an ensemble with EnsembleForCausalLM.from_pretrained(directory)."
            )
        self.members = nn.ModuleList(members)
        self.register_buffer("log_weights", torch.tensor([math.log(w) for w in config.normalized_weights()]),
                             persistent=False)
        # Which members take position_ids (Llama, GPT-NeoX do; MPT uses ALiBi and does not). Passing them keeps
        # left-padded batched generation identical to each member's own generate().
        self._takes_position_ids = ["position_ids" in inspect.signature(m.forward).parameters for m in members]
        self._cache_args = [_cache_arg(m) for m in members]

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing to initialise: the ensemble owns no parameters of its own."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build one DynamicCache for the ensemble: each member keeps its own (EnsembleCache).
        return False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config: EnsembleConfig | None = None,
                        **kwargs) -> "EnsembleForCausalLM":
        """Load the members named in `<dir>/config.json`; `dtype` and `device_map` are passed on to each member."""
        ens_dir = Path(pretrained_model_name_or_path)
        if config is None or not isinstance(config, EnsembleConfig):
            config = EnsembleConfig.from_pretrained(str(ens_dir))
        config.members = [_resolve_member(ens_dir, m) for m in config.members]
        check_compatible(config.members)
        member_kwargs = {k: kwargs[k] for k in ("dtype", "torch_dtype", "device_map") if k in kwargs}
        members = [AutoModelForCausalLM.from_pretrained(m, **member_kwargs) for m in config.members]
        model = cls(config, members)
        model.eval()
        return model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """Write a new ensemble directory pointing at the same members (their weights are not copied)."""
        save_ensemble(self.config.members, self.config.weights, save_directory)

    def get_input_embeddings(self) -> nn.Module:
        return self.members[0].get_input_embeddings()

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, past_key_values: EnsembleCache | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                cache: EnsembleCache | None = None, **kwargs) -> CausalLMOutputWithPast:
        # transformers >= 5.24 hands the cache to forward() as `cache`; earlier 5.x as `past_key_values`.
        ensemble_cache = cache if cache is not None else past_key_values
        use_cache = bool(use_cache)
        caches = ensemble_cache.member_caches if ensemble_cache is not None else [None] * len(self.members)
        member_log_probs, new_caches = [], []
        for member, member_cache, takes_pos, cache_arg in zip(self.members, caches, self._takes_position_ids,
                                                              self._cache_args):
            extra = {"position_ids": position_ids} if takes_pos and position_ids is not None else {}
            out = member(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache, return_dict=True,
                         **{cache_arg: member_cache}, **extra)
            # .to(): with a device_map, members may sit on different devices; mix on the first member's.
            member_log_probs.append(torch.log_softmax(out.logits.float(), dim=-1).to(self.device))
            new_caches.append(_output_cache(out) if use_cache else None)
        stacked = torch.stack(member_log_probs)  # [members, batch, seq, vocab]
        log_weights = self.log_weights.to(stacked.device).view(-1, 1, 1, 1)
        log_probs = torch.logsumexp(stacked + log_weights, dim=0)

        loss = None
        if labels is not None:
            # The log-probs are normalised, so cross-entropy on them is exactly the ensemble's NLL.
            loss = nn.functional.cross_entropy(log_probs[:, :-1].reshape(-1, log_probs.shape[-1]),
                                               labels[:, 1:].reshape(-1).to(log_probs.device), ignore_index=-100)
        # The output field carries the installed transformers' cache name, so generate() feeds it back next step.
        return CausalLMOutputWithPast(loss=loss, logits=log_probs,
                                      **{_OUTPUT_CACHE_FIELD: EnsembleCache(new_caches) if use_cache else None})


def _cache_arg(member: nn.Module) -> str:
    """The keyword a member's forward() takes its key/value cache by (`cache` from transformers 5.24 on)."""
    params = inspect.signature(member.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: CausalLMOutputWithPast):
    """The cache a member returned, under either name transformers 5.x uses."""
    return out.get("cache", out.get("past_key_values"))


def save_ensemble(member_dirs: Sequence[str | Path], weights: Sequence[float] | None,
                  out_dir: str | Path) -> Path:
    """Write an ensemble directory: config.json (members relative to `out_dir`) + the shared tokenizer files.

    `weights` are normalised to sum to 1 when loaded; None means uniform. Raises FusebenchError when the members
    do not share one vocabulary.
    """
    out_dir = Path(out_dir)
    members = [str(m) for m in member_dirs]
    if not members:
        raise FusebenchError("an ensemble needs at least one member model directory; none were given.")
    _normalize_weights(list(weights) if weights is not None else None, len(members))  # validate early
    check_compatible(members)
    member_configs = [AutoConfig.from_pretrained(m) for m in members]
    first = member_configs[0]
    config = EnsembleConfig(
        members=[_relative_member(m, out_dir) for m in members],
        weights=[float(w) for w in weights] if weights is not None else None,
        vocab_size=first.vocab_size,
        max_position_embeddings=min(_context_length(c) for c in member_configs),
        bos_token_id=first.bos_token_id, eos_token_id=first.eos_token_id,
        pad_token_id=getattr(first, "pad_token_id", None),
        architectures=[EnsembleForCausalLM.__name__],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    tok_src = Path(members[0])
    if tok_src.is_dir():
        for name in TOKENIZER_FILES:
            if (tok_src / name).is_file():
                shutil.copyfile(tok_src / name, out_dir / name)
    else:  # a hub id: save the tokenizer through transformers
        from fusebench.models.tokenizers import load_tokenizer

        load_tokenizer(members[0]).save_pretrained(out_dir)
    return out_dir


def check_compatible(members: Sequence[str]) -> None:
    """Refuse members whose tokenizers or output vocabulary sizes differ (FusebenchError naming both)."""
    from fusebench.models.tokenizers import load_tokenizer

    first = members[0]
    first_vocab = load_tokenizer(first).get_vocab()
    first_size = AutoConfig.from_pretrained(first).vocab_size
    why = ("Averaging next-token probabilities position by position needs every member to use the same token ids; "
           "models with different tokenizers can be combined with FuseLLM's alignment (fusebench.align) instead.")
    for other in members[1:]:
        vocab = load_tokenizer(other).get_vocab()
        if vocab != first_vocab:
            differing = len(set(vocab.items()) ^ set(first_vocab.items()))
            raise FusebenchError(
                f"ensemble members {first} and {other} have different tokenizers ({len(first_vocab)} vs "
                f"{len(vocab)} tokens, {differing} (token, id) pairs differ). {why}"
            )
        size = AutoConfig.from_pretrained(other).vocab_size
        if size != first_size:
            raise FusebenchError(
                f"ensemble members {first} and {other} have different output vocabulary sizes (config.json "
                f"vocab_size {first_size} vs {size}) although their tokenizers match. {why}"
            )


def _normalize_weights(weights: list[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise FusebenchError(f"ensemble weights {weights} give {len(weights)} values for {n} members; "
                             "give one weight per member (or none for uniform).")
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise FusebenchError(f"ensemble weights {weights} must all be positive; drop a member instead of "
                             "giving it weight 0.")
    total = float(sum(weights))
    return [w / total for w in weights]


def _relative_member(member: str, out_dir: Path) -> str:
    path = Path(member)
    if not path.is_dir():
        return member  # a hub id, kept verbatim
    try:
        return os.path.relpath(path.resolve(), out_dir.resolve())
    except ValueError:  # different drives on Windows: relative paths are impossible
        return str(path.resolve())


def _resolve_member(ens_dir: Path, member: str) -> str:
    candidate = ens_dir / member
    return str(candidate.resolve()) if candidate.is_dir() else member


def _context_length(config: PretrainedConfig) -> int:
    for key in _CONTEXT_KEYS:
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return 2048


AutoConfig.register(MODEL_TYPE, EnsembleConfig, exist_ok=True)
AutoModelForCausalLM.register(EnsembleConfig, EnsembleForCausalLM, exist_ok=True)
