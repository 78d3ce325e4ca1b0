"""A model whose class lives in its own repository (`auto_map`, `trust_remote_code: true`): trained and evaluated.

The model directory is a real one of that kind: config.json names `configuration_remote.py` / `modeling_remote.py`
beside it through `auto_map`, with a `model_type` transformers does not know, so nothing loads it without
trust_remote_code. The run goes through `fusebench run` in a subprocess with no terminal: a prompt for trust would
show in its output (and fail after its timeout), a missing flag would stop the evaluation stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

CONFIGURATION = '''from transformers import LlamaConfig


class RemoteLlamaConfig(LlamaConfig):
    model_type = "fusebench_remote_llama"
'''

MODELING = '''from transformers import LlamaForCausalLM

from .configuration_remote import RemoteLlamaConfig


class RemoteLlamaForCausalLM(LlamaForCausalLM):
    config_class = RemoteLlamaConfig
'''


def _remote_code_model(tiny_llama_dir: Path, out: Path) -> Path:
    shutil.copytree(tiny_llama_dir, out)
    (out / "configuration_remote.py").write_text(CONFIGURATION)
    (out / "modeling_remote.py").write_text(MODELING)
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="fusebench_remote_llama", architectures=["RemoteLlamaForCausalLM"],
                  auto_map={"AutoConfig": "configuration_remote.RemoteLlamaConfig",
                            "AutoModelForCausalLM": "modeling_remote.RemoteLlamaForCausalLM"})
    (out / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config.pop("tokenizer_class", None)  # as many remote-code repos: the tokenizer class comes from the config
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return out


def test_a_trust_remote_code_model_trains_and_evaluates_without_a_prompt(tmp_path, tiny_llama_dir):
    model = _remote_code_model(tiny_llama_dir, tmp_path / "remote")
    recipe = {"name": "remote",
              "corpora": {"c": {"kind": "tiny_world", "domain": "general", "train_chars": 6000, "test_chars": 1500}},
              "models": {"target": {"role": "target", "path": str(model), "trust_remote_code": True},
                         "clm": {"role": "baseline", "init": "target",
                                 "train": {"corpus": "c", "steps": 1, "seq_len": 32, "batch_size": 2, "lr": 1e-5,
                                           "warmup_ratio": 0.0}}},
              "evaluate": {"suites": ["perplexity"], "models": ["target", "clm"], "perplexity_corpora": ["c"],
                           "max_length": 64}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "run", str(path), "--workdir", str(tmp_path / "w")],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert "[y/N]" not in proc.stdout + proc.stderr, "transformers asked whether to trust the remote code"
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads(next((tmp_path / "w" / "cache" / "model").glob("clm-*/config.json")).read_text())
    assert trained["model_type"] == "fusebench_remote_llama" and "auto_map" in trained  # the remote class trained
    scores = list((tmp_path / "w" / "cache" / "eval").glob("*/remote/*/perplexity.json"))
    assert {p.parent.name for p in scores} == {"target", "clm"}
