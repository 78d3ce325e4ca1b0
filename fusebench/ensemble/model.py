"""Ensemble directories, fusebench side: checks, saving, and registration with transformers' Auto classes.

The model itself lives in `fusebench.ensemble.modeling`, a self-contained file that `save_ensemble` copies into
every ensemble directory (`auto_map` in config.json points at it), so a saved ensemble loads with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` where fusebench is not installed, and after
the directory is copied elsewhere: the members are stored inside it (`members/<i>/`, hard links to the member
artifacts where possible). Importing this module also registers the config and model with `AutoConfig` /
`AutoModelForCausalLM`, so inside fusebench (and lm-eval's HFLM given the path) no remote code is needed.

Members with different vocabularies are refused: probabilities over different vocabularies cannot be averaged
position by position (token id 17 means different strings in each). Combining those is what FuseLLM's alignment
(fusebench.align) is for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from transformers import AutoConfig, AutoModelForCausalLM

from fusebench.ensemble.modeling import (MODEL_TYPE, EnsembleCache, EnsembleConfig, EnsembleError,
                                         EnsembleForCausalLM, normalize_weights, write_ensemble_dir)
from fusebench.errors import FusebenchError

__all__ = ["EnsembleCache", "EnsembleConfig", "EnsembleForCausalLM", "check_compatible", "save_ensemble"]


def save_ensemble(member_dirs: Sequence[str | Path], weights: Sequence[float] | None,
                  out_dir: str | Path) -> Path:
    """Write a self-contained ensemble directory (config.json with auto_map, the modelling file, the tokenizer
    files and the members under `members/<i>/`) and return it.

    `weights` are normalised to sum to 1 when loaded; None means uniform. Raises FusebenchError when the members
    do not share one vocabulary.
    """
    members = [str(m) for m in member_dirs]
    if not members:
        raise FusebenchError("an ensemble needs at least one member model directory; none were given.")
    try:
        normalize_weights(list(weights) if weights is not None else None, len(members))  # validate early
    except EnsembleError as err:
        raise FusebenchError(str(err)) from None
    check_compatible(members)
    return write_ensemble_dir(members, weights, out_dir)


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


AutoConfig.register(MODEL_TYPE, EnsembleConfig, exist_ok=True)
AutoModelForCausalLM.register(EnsembleConfig, EnsembleForCausalLM, exist_ok=True)
