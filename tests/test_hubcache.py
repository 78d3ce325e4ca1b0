"""The private hub cache of tests/hubcache.py serves the paper recipes' hub ids offline, as a real run reads them.

These tests pin the two cache layouts the rehearsal relies on (huggingface_hub's for models, datasets' prepared
cache for datasets): an upgrade of either library that changes them fails here, loudly, instead of turning the
rehearsal into a run that silently reads nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hubcache import BBH_DATASET, MODELS, MULTIPL_E_LANGS, build_hub_cache, hub_env, model_snapshot

ROOT = Path(__file__).resolve().parents[1]
LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return build_hub_cache(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture
def private_cache(hf_home, monkeypatch) -> Path:
    """Point this process's datasets / huggingface_hub at the private cache (they read these at call time)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    assert datasets.config.HF_HUB_OFFLINE, "these tests must run offline (conftest sets HF_HUB_OFFLINE=1)"
    return hf_home


def _recipe_hub_ids(name: str) -> tuple[set[str], set[tuple[str, str | None]]]:
    recipe = yaml.safe_load((ROOT / "recipes" / name).read_text())
    models = {m["path"] for m in recipe["models"].values() if "/" in str(m.get("path", ""))}
    corpora = {(c["path"], c.get("name")) for c in recipe["corpora"].values() if c.get("kind") == "hub"}
    return models, corpora


@pytest.mark.parametrize("recipe", ["paper.yaml", "pythia_domains_paper.yaml"])
def test_every_hub_id_of_the_paper_recipes_is_served(recipe, hf_home):
    models, corpora = _recipe_hub_ids(recipe)
    served = {m.repo_id for m in MODELS if m.branch == "main"}
    assert models and models <= served, f"{recipe} names models the rehearsal cache lacks: {models - served}"
    for path, config in corpora:
        from hubcache import dataset_dir
        assert dataset_dir(hf_home, path, config or "default").is_dir(), (path, config)


def test_models_are_stored_the_ways_the_real_checkpoints_are(hf_home):
    files = {m.repo_id: {p.name for p in model_snapshot(hf_home, m).iterdir()} for m in MODELS}
    llama2 = files["meta-llama/Llama-2-7b-hf"]
    assert "model.safetensors.index.json" in llama2 and "model-00002-of-00004.safetensors" in llama2  # sharded
    assert "tokenizer.model" in llama2  # SentencePiece
    for bin_only in ("openlm-research/open_llama_7b_v2", "mosaicml/mpt-7b"):
        assert "pytorch_model.bin" in files[bin_only] and not any(f.endswith(".safetensors") for f in files[bin_only])
    config = json.loads((model_snapshot(hf_home, MODELS[0]) / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float16"
    only_branch = next(m for m in MODELS if m.branch != "main")
    refs = model_snapshot(hf_home, only_branch).parents[1] / "refs"
    assert [p.name for p in refs.iterdir()] == [only_branch.branch]


def test_models_load_by_hub_id_offline_and_the_revision_only_one_needs_its_revision(private_cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llama = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
    assert llama.dtype == torch.float16 and type(llama).__name__ == "LlamaForCausalLM"
    mpt = AutoModelForCausalLM.from_pretrained("mosaicml/mpt-7b")  # from pytorch_model.bin
    assert type(mpt).__name__ == "MptForCausalLM" and mpt.dtype == torch.bfloat16
    mpt_tok, neox_tok = (AutoTokenizer.from_pretrained(r) for r in ("mosaicml/mpt-7b", "EleutherAI/pythia-1b"))
    assert mpt.config.vocab_size > len(mpt_tok) and mpt_tok.get_vocab() == neox_tok.get_vocab()  # padded, shared
    l2, ol = (AutoTokenizer.from_pretrained(r)
              for r in ("meta-llama/Llama-2-7b-hf", "openlm-research/open_llama_7b_v2"))
    assert l2.tokenize(" return x")[0].startswith("▁") and l2.get_vocab() != ol.get_vocab()
    spec = next(m for m in MODELS if m.branch != "main")
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(spec.repo_id)
    at_branch = AutoModelForCausalLM.from_pretrained(spec.repo_id, revision=spec.branch)
    at_commit = AutoModelForCausalLM.from_pretrained(spec.repo_id, revision=spec.commit)
    assert all(torch.equal(a, b) for a, b in zip(at_branch.state_dict().values(), at_commit.state_dict().values()))


def test_a_fresh_process_with_hf_home_reads_models_and_streams_datasets(hf_home):
    """What `fusebench run` sees: only environment variables point it at the cache."""
    code = ("import json; from huggingface_hub import hf_hub_download; from datasets import load_dataset; "
            "print(json.load(open(hf_hub_download('openlm-research/open_llama_7b_v2', 'config.json')))['model_type']); "
            "s = load_dataset('JeanKaddour/minipile', split='train', streaming=True); print(sum(1 for _ in s))")
    env = {**os.environ, **hub_env(hf_home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["llama", str(len(_minipile_train(hf_home)))]


def _minipile_train(hf_home: Path) -> list:
    from datasets import load_dataset
    return list(load_dataset("JeanKaddour/minipile", split="train", cache_dir=str(hf_home / "datasets")))


@pytest.mark.parametrize("repo,config,split,fields", [
    ("JeanKaddour/minipile", None, "test", {"text"}),
    ("ArmelR/the-pile-splitted", "UPSTO Backgrounds", "train", {"text", "meta"}),
    ("allenai/ai2_arc", "ARC-Challenge", "test", {"id", "question", "choices", "answerKey"}),
    ("aps/super_glue", "boolq", "validation", {"question", "passage", "idx", "label"}),
    ("Rowan/hellaswag", None, "validation", {"ctx_a", "ctx_b", "activity_label", "endings", "label"}),
    ("allenai/openbookqa", "main", "test", {"id", "question_stem", "choices", "answerKey"}),
    (BBH_DATASET, "date_understanding", "test", {"input", "target"}),
    ("nuprl/MultiPL-E", "humaneval-rs", "test", {"name", "language", "prompt", "tests", "stop_tokens"}),
])
def test_datasets_load_by_hub_id_offline_with_the_real_configs_splits_and_fields(private_cache, repo, config, split,
                                                                                 fields):
    from datasets import load_dataset

    rows = load_dataset(repo, config, split=split)
    assert len(rows) >= 1 and fields <= set(rows.column_names)


def _task_dict(task_names: list[str], include: list[Path]):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in include], include_defaults=False)
    return manager.load(task_names)["tasks"]


def test_lm_eval_builds_the_hub_tasks_of_the_paper_suites_from_the_cache(private_cache):
    """lm-eval's own YAMLs (dataset_path / dataset_name / splits as they ship) load their data from the cache."""
    from fusebench.evaluate.bbh_offline import BBH_TASKS

    tasks = _task_dict(["arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa",
                        *(f"bbh_cot_fewshot_{t}" for t in BBH_TASKS)],
                       [LM_EVAL_TASKS / d for d in ("arc", "super_glue/boolq", "hellaswag", "openbookqa",
                                                    "bbh/cot_fewshot")])
    assert len(tasks) == 5 + len(BBH_TASKS)
    for name, task in tasks.items():
        docs = list(task.test_docs() if task.has_test_docs() else task.validation_docs())
        assert len(docs) == 4, name
        assert task.doc_to_text(docs[0]) and task.doc_to_target(docs[0]) is not None, name
    hella = tasks["hellaswag"]
    assert len(hella.doc_to_choice(next(iter(hella.validation_docs())))) == 4  # lm-eval's process_docs ran


def test_fusebench_multipl_e_tasks_read_every_language_from_the_cache(private_cache):
    tasks = _task_dict([f"multipl_e_{lang}" for lang in MULTIPL_E_LANGS], [ROOT / "tasks" / "multipl_e"])
    assert len(tasks) == len(MULTIPL_E_LANGS)
    for name, task in tasks.items():
        docs = list(task.test_docs())
        assert len(docs) == 2 and all(d["name"].startswith("HumanEval_") and d["tests"] for d in docs), name
