"""Preflight (issue 21 item 6): `fusebench plan` lists every model, tokenizer and dataset the recipe names that this
machine cannot read, with the command that fetches it, and `fusebench run` stops with exit 2 before any work, not at
stage 16 of 24. Offline, against a private hub cache (tests/hubcache.py) holding some of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hubcache import MODELS, _write_models, parquet_bytes, stdlib_documents, write_dataset, write_hub_dataset

from fusebench.cli import main


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    _write_models(home, home / "_build", stdlib_documents(),
                  tuple(m for m in MODELS if m.repo_id == "meta-llama/Llama-2-7b-hf"))
    write_hub_dataset(home, "allenai/c4", {"en/c4-train.00000-of-00001.parquet": parquet_bytes([{"text": "a"}])})
    return home


@pytest.fixture
def offline_hub(hub_home, monkeypatch) -> Path:
    import datasets
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hub_home / "datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return hub_home


def _recipe(tmp_path: Path) -> Path:
    train = {"corpus": "c4", "steps": 1, "seq_len": 32, "batch_size": 2}
    data = {"name": "pre",
            "corpora": {"c4": {"kind": "hub", "path": "allenai/c4", "name": "en", "test_split": "validation"},
                        "pile": {"kind": "hub", "path": "org/not-downloaded", "revision": "v2"},
                        "local": {"kind": "files", "files": [str(tmp_path / "nowhere" / "*.parquet")]}},
            "tokenizers": {"qwen": {"kind": "pretrained", "path": "Qwen/Qwen2.5-0.5B"}},
            "models": {"target": {"role": "target", "path": "meta-llama/Llama-2-7b-hf"},
                       "src": {"role": "source", "path": "EleutherAI/pythia-1b", "revision": "step1000"},
                       "fused": {"role": "fused", "init": "target", "teachers": ["src"], "fusion": {"top_k": 4},
                                 "train": train}},
            "evaluate": {"suites": ["lambada"], "data": "hub", "models": ["fused"]}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


EXPECTED = ("hf download EleutherAI/pythia-1b --revision step1000",
            "hf download --repo-type dataset org/not-downloaded --revision v2",
            "nowhere/*.parquet",
            "hf download Qwen/Qwen2.5-0.5B",
            "datasets.load_dataset('EleutherAI/lambada_openai', 'default')")


def test_plan_lists_what_is_missing_with_the_command_that_fetches_it(offline_hub, tmp_path, capsys):
    assert main(["plan", str(_recipe(tmp_path)), "--workdir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    section = out[out.index("preflight"):]
    for command in EXPECTED:
        assert command in section, command
    assert "5 missing" in section
    assert "Llama-2-7b-hf" not in section and "allenai/c4" not in section  # what is cached is not listed


def test_run_stops_with_exit_2_before_any_work(offline_hub, tmp_path, capsys):
    assert main(["run", str(_recipe(tmp_path)), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    for command in EXPECTED:
        assert command in err, command
    assert not (tmp_path / "w").exists()  # not one stage started, not even a log


def test_once_everything_is_there_plan_says_so(offline_hub, tmp_path, capsys, monkeypatch):
    import datasets
    from datasets import Features, Value

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")  # this test's own copy

    data = {"name": "ok", "corpora": {"c4": {"kind": "hub", "path": "allenai/c4", "name": "en"}},
            "models": {"target": {"role": "target", "path": "meta-llama/Llama-2-7b-hf"}},
            "evaluate": {"suites": ["lambada"], "data": "hub"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    write_dataset(tmp_path, "EleutherAI/lambada_openai", "default", {"test": [{"text": "a b"}]},
                  Features({"text": Value("string")}))
    assert main(["plan", str(tmp_path / "r.yaml"), "--workdir", str(tmp_path / "w")]) == 0
    assert "every model, tokenizer and dataset is readable" in capsys.readouterr().out
