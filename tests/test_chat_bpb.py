"""Response bits per byte (`--suite chat`) equals a direct computation over the assistant turns only."""

from __future__ import annotations

import json
import math

import pytest

from fusebench.errors import FusebenchError

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5. So the answer is 5."}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue — like the sky."},
     {"role": "user", "content": "Another one?"}, {"role": "assistant", "content": "Green, the colour of grass."}],
]


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    from chat_models import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("chat_model"))


def _direct_bits_per_byte(model_dir, conversations) -> float:
    """-Σ log p(turn tokens | rendered prefix) / ln 2 / Σ response bytes, with the turn's tokens being those of
    prefix + response past the prefix stripped of its trailing whitespace (lm-eval's split of context and
    continuation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    nll, nbytes = 0.0, 0
    for conv in conversations:
        for i, m in enumerate(conv):
            if m["role"] != "assistant":
                continue
            prefix = tok.apply_chat_template(conv[:i], add_generation_prompt=True, tokenize=False)
            ids = tok(prefix + m["content"], add_special_tokens=False).input_ids
            n_ctx = len(tok(prefix.rstrip(), add_special_tokens=False).input_ids)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            nll -= sum(logp[j - 1, ids[j]].item() for j in range(n_ctx, len(ids)))
            nbytes += len(m["content"].encode("utf-8"))
    return nll / math.log(2) / nbytes


def test_response_bits_per_byte_scores_only_assistant_turns_in_the_models_template(tmp_path, tiny_chat_model):
    from fusebench.evaluate.api import evaluate_model

    corpus = tmp_path / "chat"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS))
    result = evaluate_model(tiny_chat_model, ["chat"], corpora={"tiny": corpus}, workdir=tmp_path / "w",
                            results_dir=tmp_path / "r", device="cpu", batch_size=2)
    bpb = result.score("tiny", "bits_per_byte")
    assert bpb.value == pytest.approx(_direct_bits_per_byte(tiny_chat_model, CONVERSATIONS), abs=1e-4)
    assert result.score("tiny", "byte_perplexity").value == pytest.approx(2 ** bpb.value, rel=1e-6)
    # three assistant turns were scored, each after the template's assistant header
    rows = [json.loads(line) for line in next((tmp_path / "w" / "data" / "chat_bpb").glob("*.jsonl")).open()]
    assert [r["response"] for r in rows] == [CONVERSATIONS[0][1]["content"], CONVERSATIONS[1][1]["content"],
                                             CONVERSATIONS[1][3]["content"]]
    assert all(r["context"].endswith("<|im_start|>assistant\n") for r in rows)
    assert "Blue — like the sky.<|im_end|>" in rows[2]["context"]


def test_a_model_without_a_chat_template_is_refused_naming_the_fix(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.api import evaluate_model

    corpus = tmp_path / "chat"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text(json.dumps({"messages": CONVERSATIONS[0]}) + "\n")
    with pytest.raises(FusebenchError, match="no chat template"):
        evaluate_model(tiny_neox_dir, ["chat"], corpora={"tiny": corpus}, workdir=tmp_path / "w")
