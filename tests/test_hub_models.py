"""Hub ids and revisions wherever a recipe loads a model, against a private offline Hugging Face cache.

The cache (tests/hubcache.py) holds tiny real models under the paper's ids, stored as the real ones are: fp16
sharded safetensors (Llama-2), `pytorch_model.bin` only (OpenLLaMA-v2), a branch-only revision (Pythia). Nothing is
mocked: the stages resolve the ids through huggingface_hub, offline.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hubcache import MODELS, _write_models, model_snapshot, stdlib_documents

from fusebench.errors import FusebenchError
from fusebench.pipeline.graph import build_stages
from fusebench.pipeline.recipe import load_recipe
from fusebench.pipeline.runner import Runner

WANTED = ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "openlm-research/open_llama_7b_v2",
          "EleutherAI/pythia-14m", "EleutherAI/pythia-1b")


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    _write_models(home, home / "_build", stdlib_documents(), tuple(m for m in MODELS if m.repo_id in WANTED))
    return home


@pytest.fixture
def offline_hub(hub_home, monkeypatch) -> Path:
    """Point this process's huggingface_hub at the private cache (its constants are read at import time)."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_home


def _recipe(tmp_path: Path, models: dict, overrides: list[str] = ()) -> object:
    data = {"name": "hubtest",
            "corpora": {"c": {"kind": "tiny_world", "domain": "general", "train_chars": 6000, "test_chars": 2000}},
            "models": models}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path, overrides)


TRAIN = {"corpus": "c", "steps": 1, "seq_len": 48, "batch_size": 2, "lr": 1.0e-5, "warmup_ratio": 0.0}


def test_hub_ids_bin_weights_and_revisions_run_through_extraction_alignment_and_training(tmp_path, offline_hub):
    recipe = _recipe(tmp_path, {
        "target": {"role": "target", "path": "meta-llama/Llama-2-7b-hf"},             # fp16, sharded
        "openllama": {"role": "source", "path": "openlm-research/open_llama_7b_v2"},  # pytorch_model.bin only
        "pythia": {"role": "source", "path": "EleutherAI/pythia-14m", "revision": "step1000"},  # no refs/main
        "fused": {"role": "fused", "init": "target", "teachers": ["openllama", "pythia"],
                  "fusion": {"top_k": 4, "extract_batch_size": 2}, "train": TRAIN},
    })
    runner = Runner(build_stages(recipe), tmp_path / "work")
    runner.run()
    # the .bin-only model was converted once, weights-only, into its stage: safetensors, byte-identical tensors
    conv = runner.path("model:openllama")
    assert (conv / "model.safetensors").exists() and not list(conv.glob("*.bin"))
    from safetensors.torch import load_file

    spec = next(m for m in MODELS if m.repo_id == "openlm-research/open_llama_7b_v2")
    original = torch.load(model_snapshot(offline_hub, spec) / "pytorch_model.bin", weights_only=True)
    converted = load_file(conv / "model.safetensors")
    assert set(converted) == set(original)
    assert all(torch.equal(converted[k], original[k]) and converted[k].dtype == torch.float16 for k in original)
    # the safetensors models are pointed to in the cache, at the revision asked for
    pointer = json.loads((runner.path("model:pythia") / "pointer.json").read_text())
    assert pointer["revision"] == "step1000" and pointer["location"].endswith(
        next(m for m in MODELS if m.repo_id == "EleutherAI/pythia-14m").commit)
    # the fused model trained from the hub target through both aligned sources, and its weights are fp32 and finite
    log = [json.loads(l) for l in (runner.path("model:fused") / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and np.isfinite(log[0]["loss"]) and log[0]["fusion"] > 0
    trained = load_file(runner.path("model:fused") / "model.safetensors")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in trained.values())


def test_revision_is_part_of_the_stage_key_and_missing_revisions_fail_in_words(tmp_path, offline_hub):
    def key(rev):
        spec = {"path": "EleutherAI/pythia-14m", **({"revision": rev} if rev else {})}
        stages = Runner(build_stages(_recipe(tmp_path, {"m": spec})), tmp_path / "w")
        return stages.stages["model:m"].key

    assert len({key(None), key("step1000"), key("step2000")}) == 3
    runner = Runner(build_stages(_recipe(tmp_path, {"m": {"path": "EleutherAI/pythia-14m"}})), tmp_path / "w")
    with pytest.raises(FusebenchError, match="revision 'main'"):  # only a branch exists for this id
        runner.run()
    with pytest.raises(FusebenchError, match="revision.*needs `path"):
        _recipe(tmp_path, {"m": {"arch": "llama", "tokenizer": "t", "revision": "v1", "train": TRAIN}})


class _Exploit:
    def __reduce__(self):
        return (Path.write_text, (Path("/tmp/fusebench-pwned"), "ran"))


def test_pickled_code_in_bin_weights_is_refused(tmp_path, offline_hub):
    from fusebench.models.hub import convert_bin_to_safetensors

    src = tmp_path / "evil"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Exploit()}))
    torch.save({"w": torch.zeros(2)}, src / "ok.pt")  # a valid file with another suffix is ignored
    Path("/tmp/fusebench-pwned").unlink(missing_ok=True)
    with pytest.raises(FusebenchError, match="weights-only"):
        convert_bin_to_safetensors(src, tmp_path / "out")
    assert not Path("/tmp/fusebench-pwned").exists()


def test_a_teacher_sharing_the_targets_tokenizer_feeds_its_own_store(tmp_path, offline_hub):
    recipe = _recipe(tmp_path, {
        "target": {"role": "target", "path": "meta-llama/Llama-2-7b-hf"},
        "llama2_13b": {"role": "teacher", "path": "meta-llama/Llama-2-13b-hf"},   # same tokenizer files
        "openllama": {"role": "source", "path": "openlm-research/open_llama_7b_v2"},  # another SentencePiece
        "kd": {"role": "baseline", "init": "target", "teachers": ["llama2_13b"],
               "fusion": {"top_k": 4, "include_own": False}, "train": TRAIN},
        "fused": {"role": "fused", "init": "target", "teachers": ["openllama"], "fusion": {"top_k": 4},
                  "train": TRAIN},
    })
    stages = {s.id: s for s in build_stages(recipe)}
    aligning = sorted(s.split("@")[0] for s in stages if s.startswith(("align:", "vocabmap:")))
    assert aligning == ["align:openllama->target", "vocabmap:openllama->target.mined"]
    assert not any("llama2_13b" in s for s in stages if s.startswith(("align:", "vocabmap:")))
    teacher_store = next(s for s in stages if s.startswith("extract:llama2_13b@"))
    assert teacher_store in stages["model:kd"].inputs
    # and KD trains on it: every sequence's target is the teacher's own distribution
    runner = Runner(list(stages.values()), tmp_path / "w")
    runner.run("model:kd")
    choices = json.loads((runner.path("model:kd") / "fusion_choices.json").read_text())
    log = [json.loads(l) for l in (runner.path("model:kd") / "train_log.jsonl").read_text().splitlines()]
    assert choices["(own)"] == 0 and choices["llama2_13b"] > 0 and log[0]["fusion"] > 0


def test_evaluation_merge_and_ensemble_load_hub_ids(tmp_path, offline_hub):
    from fusebench.models.load import load_causal_lm, load_tokenizer

    model = load_causal_lm("EleutherAI/pythia-14m", revision="step1000", device="cpu")  # offline, from the cache
    assert load_tokenizer("EleutherAI/pythia-14m", revision="step1000")("x")["input_ids"]
    assert next(model.parameters()).dtype == torch.float32
    recipe = _recipe(tmp_path, {
        "a": {"path": "EleutherAI/pythia-1b"},                           # fp16
        "b": {"path": "EleutherAI/pythia-14m", "revision": "step1000"},  # same shapes and tokenizer
        "ens": {"ensemble": ["a", "b"]},
        "merged": {"merge": {"method": "linear", "models": ["a", "b"]}},
    })
    runner = Runner(build_stages(recipe), tmp_path / "w")
    done = runner.run()
    for name in ("ens", "merged"):
        out = load_causal_lm(done[f"model:{name}"], device="cpu")
        assert torch.isfinite(out(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_remote_code_is_trusted_only_where_the_recipe_names_it(tmp_path, offline_hub):
    from fusebench.pipeline.artifacts import Model

    recipe = _recipe(tmp_path, {"plain": {"path": "meta-llama/Llama-2-7b-hf"},
                                "trusted": {"path": "EleutherAI/pythia-1b", "trust_remote_code": True},
                                "converted": {"path": "openlm-research/open_llama_7b_v2"},
                                "converted_trusted": {"path": "openlm-research/open_llama_7b_v2",
                                                      "trust_remote_code": True}})
    runner = Runner(build_stages(recipe), tmp_path / "w")
    done = runner.run()
    flags = {n: Model(done[f"model:{n}"]).trust_remote_code for n in recipe.models}
    assert flags == {"plain": False, "trusted": True, "converted": False, "converted_trusted": True}
