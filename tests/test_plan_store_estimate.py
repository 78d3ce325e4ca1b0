"""`fusebench plan` costs each store from the model's real vocabulary (issue 21 item 7), not one figure for all."""

from __future__ import annotations

import yaml

from fusebench.extract.store import bytes_per_token
from fusebench.pipeline.estimate import describe_plan
from fusebench.pipeline.recipe import load_recipe


def _config_dir(path, model_type: str, vocab: int):
    """A model directory holding only its config (plan reads configs, never weights)."""
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4).save_pretrained(path)
    return str(path)


def test_store_estimates_follow_each_models_vocabulary(tmp_path):
    train = {"corpus": "c", "steps": 1, "seq_len": 64, "batch_size": 2}
    recipe = {"name": "vocab", "corpora": {"c": {"kind": "tiny_world", "domain": "mix", "train_chars": 400_000}},
              "models": {"target": {"role": "target", "path": _config_dir(tmp_path / "qwen", "qwen2", 151_936)},
                         "src": {"role": "source", "path": _config_dir(tmp_path / "llama", "llama", 32_000)},
                         "fused": {"role": "fused", "init": "target", "teachers": ["src"], "fusion": {"top_k": 10},
                                   "train": train}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    lines = describe_plan(load_recipe(tmp_path / "r.yaml"))
    row = {line.split()[0]: line for line in lines if line.strip().startswith(("extract:", "align:"))}
    target = next(v for k, v in row.items() if k.startswith("extract:target@"))
    source = next(v for k, v in row.items() if k.startswith("extract:src@"))
    aligned = next(v for k, v in row.items() if k.startswith("align:src->target@"))
    assert f"({bytes_per_token(151_936, 10)} B/token, vocab 151,936)" in target
    assert f"({bytes_per_token(32_000, 10)} B/token, vocab 32,000)" in source
    assert "(32 B/token, vocab 151,936)" in aligned  # packed like a store, in the target's ids (align.corpus)
    assert bytes_per_token(151_936, 10) == 32 + 4 and bytes_per_token(32_000, 10) == 29 + 2
