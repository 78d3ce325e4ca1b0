"""The output ensemble as a transformers model: N causal LMs sharing one tokenizer, averaged in probability space.

At every position the ensemble predicts p(x) = sum_i w_i * softmax(logits_i)(x), and returns its logarithm as
`logits` (computed with logsumexp in float32, so a member that is very confident cannot underflow the mix). Because
log-probabilities are already normalised, softmax(logits) == p and everything downstream -- lm-eval's
log-likelihood, rolling perplexity, greedy `generate()` -- reads the ensemble exactly as it reads any other model.

This file is self-contained (torch and transformers only): `save_ensemble` copies it into every ensemble directory
as `modeling_fusebench_ensemble.py` and names it in config.json's `auto_map`, so
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads an ensemble in a Python that has never
imported (or installed) fusebench. Keep it that way: no fusebench imports here. The tokenizer is the first
member's: `AutoTokenizer.from_pretrained(dir, trust_remote_code=False)` loads it without this file (transformers
reads config.json first and, with trust_remote_code unset, asks "[y/N]" for any custom architecture).
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
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationMixin, PretrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import CausalLMOutputWithPast


class EnsembleError(ValueError):
    """A refused ensemble (bad weights, mismatched members); fusebench re-raises it as a FusebenchError."""


MODEL_TYPE = "fusebench_ensemble"
# The name this file gets inside an ensemble directory, and the auto_map that points transformers at it.
MODELING_FILE = "modeling_fusebench_ensemble.py"
AUTO_MAP = {"AutoConfig": "modeling_fusebench_ensemble.EnsembleConfig",
            "AutoModelForCausalLM": "modeling_fusebench_ensemble.EnsembleForCausalLM"}
MEMBERS_DIR = "members"
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

    `members` are stored in config.json relative to the ensemble directory when they are local directories (the
    members saved inside it, `members/<i>`), and verbatim when they are hub ids. After loading they are absolute.
    """

    model_type = MODEL_TYPE
    members: list[str] = field(default_factory=list)
    weights: list[float] | None = None  # None = uniform
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    use_cache: bool = True

    def normalized_weights(self) -> list[float]:
        return normalize_weights(self.weights, len(self.members))


class EnsembleCache:
    """One key/value cache per member, carried through `generate()` as the ensemble's cache."""

    is_croppable = False  # generate() (5.24, on MPS) asks before deferring its stop check; members' caches differ

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
            raise EnsembleError(
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
        config.members = [resolve_member(ens_dir, m) for m in config.members]
        member_kwargs = {k: kwargs[k] for k in ("dtype", "torch_dtype", "device_map") if k in kwargs}
        members = [AutoModelForCausalLM.from_pretrained(m, **member_kwargs) for m in config.members]
        sizes = {m.config.vocab_size for m in members}
        if len(sizes) > 1:
            raise EnsembleError(f"ensemble members in {ens_dir} have different vocabulary sizes {sorted(sizes)}; "
                                "their probabilities cannot be averaged position by position.")
        model = cls(config, members)
        model.eval()
        return model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """Write a new ensemble directory holding the same members (see `write_ensemble_dir`)."""
        write_ensemble_dir(self.config.members, self.config.weights, save_directory)

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


def write_ensemble_dir(members: Sequence[str], weights: Sequence[float] | None, out_dir: str | Path) -> Path:
    """Write a self-contained ensemble directory and return it.

    It holds config.json (with `auto_map`), this modelling file, the first member's tokenizer files and every local
    member under `members/<i>/`: hard links to the member's files where the filesystem allows (a finished model
    artifact is never rewritten, so sharing its inodes costs no disk), copies otherwise. A hub-id member is stored
    as its id. The directory can then be copied or moved anywhere and still loads.
    """
    out_dir = Path(out_dir)
    members = [str(m) for m in members]
    normalize_weights(list(weights) if weights is not None else None, len(members))  # validate early
    member_configs = [AutoConfig.from_pretrained(m) for m in members]
    first = member_configs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = []
    for i, member in enumerate(members):
        if not Path(member).is_dir():
            stored.append(member)  # a hub id, kept verbatim
            continue
        dest = out_dir / MEMBERS_DIR / str(i)
        if Path(member).resolve() != dest.resolve():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(member, dest, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*"))
        stored.append(f"{MEMBERS_DIR}/{i}")
    config = EnsembleConfig(
        members=stored, weights=[float(w) for w in weights] if weights is not None else None,
        vocab_size=first.vocab_size, max_position_embeddings=min(_context_length(c) for c in member_configs),
        bos_token_id=first.bos_token_id, eos_token_id=first.eos_token_id,
        pad_token_id=getattr(first, "pad_token_id", None), architectures=[EnsembleForCausalLM.__name__],
    )
    config.auto_map = dict(AUTO_MAP)
    config.save_pretrained(out_dir)
    tok_src = Path(members[0])
    if tok_src.is_dir():
        for name in TOKENIZER_FILES:
            if (tok_src / name).is_file():
                shutil.copyfile(tok_src / name, out_dir / name)
    else:  # a hub id: save its tokenizer through transformers
        AutoTokenizer.from_pretrained(members[0]).save_pretrained(out_dir)
    if Path(__file__).resolve() != (out_dir / MODELING_FILE).resolve():
        shutil.copyfile(__file__, out_dir / MODELING_FILE)
    return out_dir


def normalize_weights(weights: list[float] | None, n: int) -> list[float]:
    """Weights summing to 1 (uniform when None); EnsembleError for a wrong count or a non-positive weight."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise EnsembleError(f"ensemble weights {weights} give {len(weights)} values for {n} members; "
                            "give one weight per member (or none for uniform).")
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise EnsembleError(f"ensemble weights {weights} must all be positive; drop a member instead of "
                            "giving it weight 0.")
    total = float(sum(weights))
    return [w / total for w in weights]


def resolve_member(ens_dir: Path, member: str) -> str:
    """A member directory relative to the ensemble directory made absolute; a hub id stays as it is."""
    candidate = Path(ens_dir) / member
    return str(candidate.resolve()) if candidate.is_dir() else member


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copy2(src, dst)
    return dst


def _context_length(config: PretrainedConfig) -> int:
    for key in _CONTEXT_KEYS:
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return 2048


def _cache_arg(member: nn.Module) -> str:
    """The keyword a member's forward() takes its key/value cache by (`cache` from transformers 5.24 on)."""
    params = inspect.signature(member.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: CausalLMOutputWithPast):
    """The cache a member returned, under either name transformers 5.x uses."""
    return out.get("cache", out.get("past_key_values"))
