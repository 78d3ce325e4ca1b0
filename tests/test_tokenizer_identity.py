"""Same-tokenizer detection compares the tokenizers themselves, not hub ids against a table (issue 21 item 8).

A private offline hub cache (tests/hubcache.py) holds two models under ids no table names, published with one
tokenizer (their tokenizer_config.json differ only in what does not change the ids: chat template, maximum length),
and a third with another tokenizer. A teacher sharing the target's tokenizer must feed its own store (no vocab map,
no alignment); the other must be aligned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hubcache import HubModel, _write_models, model_snapshot, stdlib_documents

from fusebench.models.hub import TOKENIZER_FAMILIES, tokenizer_fingerprint, tokenizer_identity
from fusebench.pipeline.graph import build_stages
from fusebench.pipeline.recipe import load_recipe

SMALL = HubModel("Qwen/Qwen2.5-0.5B", "gpt_neox", "neox", 0, pad_vocab_to=64, context=512)
LARGE = HubModel("Qwen/Qwen2.5-1.5B", "gpt_neox", "neox", 1, hidden=48, pad_vocab_to=64, context=512)
OTHER = HubModel("mistralai/Mistral-7B-v0.1", "llama", "llama2", 2, context=512)


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    _write_models(home, home / "_build", stdlib_documents(), (SMALL, LARGE, OTHER))
    config = model_snapshot(home, LARGE) / "tokenizer_config.json"  # what differs between real Qwen2.5 sizes' repos
    data = json.loads(config.read_text())
    config.write_text(json.dumps(data | {"model_max_length": 131072, "chat_template": "{{ messages }}"}))
    return home


@pytest.fixture
def offline_hub(hub_home, monkeypatch) -> Path:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_home


def test_ids_outside_the_family_table_sharing_a_tokenizer_are_recognised(offline_hub):
    assert SMALL.repo_id not in TOKENIZER_FAMILIES and LARGE.repo_id not in TOKENIZER_FAMILIES
    small = tokenizer_identity(SMALL.repo_id)
    assert small is not None and small == tokenizer_identity(LARGE.repo_id)
    assert tokenizer_identity(OTHER.repo_id) not in (None, small)
    assert tokenizer_identity("Qwen/not-in-the-cache") is None  # unknown stays unknown: aligned, as before


def test_a_change_that_alters_the_ids_changes_the_fingerprint(offline_hub, tmp_path):
    src = model_snapshot(offline_hub, SMALL)
    base = tokenizer_fingerprint(src)
    for name, edit in (("normalizer", lambda d: d | {"normalizer": {"type": "Lowercase"}}),
                       ("vocabulary", lambda d: d | {"model": d["model"] | {"vocab": {**d["model"]["vocab"],
                                                                                        "zzz-new": 99999}}})):
        copy = tmp_path / name
        copy.mkdir()
        (copy / "tokenizer_config.json").write_bytes((src / "tokenizer_config.json").read_bytes())
        (copy / "tokenizer.json").write_text(json.dumps(edit(json.loads((src / "tokenizer.json").read_text()))))
        assert tokenizer_fingerprint(copy) != base, name
    copy = tmp_path / "copy"  # and the same files elsewhere give the same fingerprint
    copy.mkdir()
    for f in ("tokenizer_config.json", "tokenizer.json"):
        (copy / f).write_bytes((src / f).read_bytes())
    assert tokenizer_fingerprint(copy) == base


def test_a_kd_teacher_sharing_the_targets_tokenizer_gets_no_vocab_map_or_alignment(offline_hub, tmp_path):
    train = {"corpus": "c", "steps": 1, "seq_len": 48, "batch_size": 2, "lr": 1.0e-5, "warmup_ratio": 0.0}
    data = {"name": "qwen", "corpora": {"c": {"kind": "tiny_world", "domain": "general", "train_chars": 6000,
                                              "test_chars": 2000}},
            "models": {"target": {"role": "target", "path": SMALL.repo_id},
                       "big": {"role": "teacher", "path": LARGE.repo_id},
                       "mistral": {"role": "source", "path": OTHER.repo_id},
                       "kd": {"role": "baseline", "init": "target", "teachers": ["big"],
                              "fusion": {"top_k": 4, "include_own": False}, "train": train},
                       "fused": {"role": "fused", "init": "target", "teachers": ["mistral"], "fusion": {"top_k": 4},
                                 "train": train}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    stages = {s.id: s for s in build_stages(load_recipe(tmp_path / "r.yaml"))}
    aligning = sorted(s.split("@")[0] for s in stages if s.startswith(("align:", "vocabmap:")))
    assert aligning == ["align:mistral->target", "vocabmap:mistral->target.mined"]
    assert next(s for s in stages if s.startswith("extract:big@")) in stages["model:kd"].inputs
