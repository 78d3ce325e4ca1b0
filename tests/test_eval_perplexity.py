"""Bits per byte through lm-eval equals a direct computation from the model's own token losses."""

from __future__ import annotations

import json
import math

import pytest


def _direct_bits_per_byte(model_dir, texts, max_len):
    """sum of token NLL (nats) / ln 2 / UTF-8 bytes, every token predicted from the same window lm-eval uses:
    the first from the BOS (else EOS) token, then disjoint chunks of max_len predictions, each from the max_len
    tokens before its last target."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll, nbytes = 0.0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        full = [prefix] + ids  # full[j] is the token just before ids[j]
        pos = 0
        while pos < len(ids):
            end = min(pos + max_len, len(ids))
            start = max(0, end - max_len)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([full[start:end]])).logits[0].double(), -1)
            nll -= sum(logp[j - start, ids[j]].item() for j in range(pos, end))
            pos = end
        nbytes += len(text.encode("utf-8"))
    return nll / math.log(2) / nbytes


def test_bits_per_byte_equals_direct_token_loss_computation(tmp_path, tiny_neox_dir, stdlib_texts):
    from fusebench.evaluate.api import evaluate_model

    texts = [stdlib_texts[0][:6000], stdlib_texts[1][:900], "héllo wörld — naïve café\n"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    max_len = 128  # several windows per long document, and a last partial one
    result = evaluate_model(tiny_neox_dir, ["perplexity"], corpora={"code": corpus}, workdir=tmp_path / "w",
                            results_dir=tmp_path / "r", device="cpu", max_length=max_len, batch_size=4)
    bpb = result.score("code", "bits_per_byte")
    assert bpb.value == pytest.approx(_direct_bits_per_byte(tiny_neox_dir, texts, max_len), abs=1e-4)
    assert bpb.stderr is not None and bpb.stderr > 0
    # byte perplexity is the same quantity on another scale
    assert result.score("code", "byte_perplexity").value == pytest.approx(2 ** bpb.value, rel=1e-6)


def test_perplexity_without_corpora_names_the_fix(tmp_path, tiny_neox_dir):
    from fusebench.errors import FusebenchError
    from fusebench.evaluate.api import evaluate_model

    with pytest.raises(FusebenchError, match="--corpus"):
        evaluate_model(tiny_neox_dir, ["perplexity"], workdir=tmp_path)
