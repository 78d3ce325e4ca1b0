"""Provenance of a model's numbers: the commit and config a model was *trained* with are recorded in its stage
record when the stage finishes, and carried into every evaluation manifest of that model, beside the commit the
evaluation itself ran on."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

from fusebench.evaluate.manifest import git_commit
from fusebench.pipeline.runner import Runner, Stage

CONFIG = {"lr": 3e-4, "steps": 2}


def _trained(tmp_path, tiny_neox_dir):
    """A model stage run by the real runner: its body stands in for training (copies a tiny model's files)."""
    stage = Stage(id="model:tiny", kind="model", config=CONFIG, inputs=[],
                  run=lambda ctx: shutil.copytree(tiny_neox_dir, ctx.out, dirs_exist_ok=True))
    runner = Runner([stage], tmp_path / "work")
    runner.run("model:tiny")
    return runner.path("model:tiny")


def test_a_stage_record_names_the_commit_and_config_hash_it_was_made_with(tmp_path, tiny_neox_dir):
    record = json.loads((_trained(tmp_path, tiny_neox_dir) / ".stage.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git_commit"] and record["git_commit"].split("+")[0] == head == git_commit().split("+")[0]
    assert record["config_sha256"] == hashlib.sha256(json.dumps(CONFIG, sort_keys=True).encode()).hexdigest()


def test_the_eval_manifest_carries_the_training_commit_and_config_hash(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.api import evaluate_model

    model = _trained(tmp_path, tiny_neox_dir)
    record = json.loads((model / ".stage.json").read_text())
    record["git_commit"] = "0" * 40                        # as if trained on another commit than this process
    (model / ".stage.json").write_text(json.dumps(record))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text(json.dumps({"text": "def f(x):\n    return x + 1\n"}) + "\n")
    result = evaluate_model(model, ["perplexity"], corpora={"code": corpus}, workdir=tmp_path / "w",
                            results_dir=tmp_path / "r")
    manifest = json.loads(result.suites[0].manifest_path.read_text())
    assert manifest["model"]["trained_with"] == {"stage": "model:tiny", "key": record["key"],
                                                 "git_commit": "0" * 40,
                                                 "config_sha256": record["config_sha256"]}
    assert manifest["git_commit"].split("+")[0] != "0" * 40   # the evaluation's own commit, told apart
