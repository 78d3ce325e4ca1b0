"""Build tiny causal LMs from config with transformers, in the three architectures of the paper's world.

`llama` (the target family), `gpt_neox` (Pythia) and `mpt` are the real transformers classes, so a saved tiny model
is a standard HF directory that `AutoModelForCausalLM` loads with no remote code.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import (AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig, MptConfig, PretrainedConfig,
                          PreTrainedModel)

ARCHITECTURES = ("llama", "gpt_neox", "mpt")


class ModelSize(BaseModel):
    """The shape of a tiny model; defaults give ~1M parameters with a 4k vocabulary."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(128, gt=0)
    layers: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    intermediate: int | None = Field(None, gt=0)  # default 4 x hidden (Llama: 8/3 x hidden, rounded to 32)
    max_positions: int = Field(512, gt=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self):   # every architecture splits `hidden` evenly over the attention heads
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}), e.g. hidden: "
                             f"{self.hidden // self.heads * self.heads or self.heads}")
        return self


def model_config(arch: str, vocab_size: int, size: ModelSize, bos_id: int, eos_id: int) -> PretrainedConfig:
    """The transformers config of a tiny `arch` model. Dropout is off so training is deterministic per seed."""
    if arch == "llama":
        inter = size.intermediate or (8 * size.hidden // 3 + 31) // 32 * 32
        return LlamaConfig(vocab_size=vocab_size, hidden_size=size.hidden, intermediate_size=inter,
                           num_hidden_layers=size.layers, num_attention_heads=size.heads,
                           num_key_value_heads=size.heads, max_position_embeddings=size.max_positions,
                           bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=size.hidden,
                             intermediate_size=size.intermediate or 4 * size.hidden,
                             num_hidden_layers=size.layers, num_attention_heads=size.heads,
                             max_position_embeddings=size.max_positions, rotary_pct=0.25,
                             bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=False,
                             attention_dropout=0.0, hidden_dropout=0.0)
    if arch == "mpt":
        return MptConfig(vocab_size=vocab_size, d_model=size.hidden, n_heads=size.heads, n_layers=size.layers,
                         expansion_ratio=(size.intermediate or 4 * size.hidden) // size.hidden,
                         max_seq_len=size.max_positions, bos_token_id=bos_id, eos_token_id=eos_id,
                         attn_config={"attn_pdrop": 0, "alibi": True}, resid_pdrop=0, emb_pdrop=0)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


def build_model(arch: str, vocab_size: int, size: ModelSize, bos_id: int, eos_id: int, seed: int) -> PreTrainedModel:
    """A freshly initialised tiny model; the same seed gives the same weights."""
    import torch

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config(arch, vocab_size, size, bos_id, eos_id))
