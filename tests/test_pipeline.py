"""The stage runner: caching, invalidation, resume after kill -9, and recipe validation messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.pipeline.graph import GraphBuilder
from fusebench.pipeline.recipe import load_recipe
from fusebench.pipeline.runner import Runner

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"


def _runner(workdir: Path, *overrides: str, models=("target", "src_neox")) -> Runner:
    recipe = load_recipe(SMOKE, list(overrides))
    g = GraphBuilder(recipe)
    for m in models:
        g.model(m)
    return Runner(list(g.stages.values()), workdir)


def test_second_run_is_all_cached_and_changing_one_source_reruns_only_its_dependents(tmp_path):
    first = _runner(tmp_path)
    first.run()
    assert all(status == "cached" for _, status, _ in first.plan())

    changed = _runner(tmp_path, "models.src_neox.train.lr=0.002")
    status = {sid: s for sid, s, _ in changed.plan()}
    assert status["model:src_neox"] == "would run"
    assert [sid for sid, s in status.items() if s == "would run"] == ["model:src_neox"]
    assert status["model:target"] == "cached" and status["tokenizer:bpe"] == "cached"


def test_saved_models_load_with_auto_classes_and_their_loss_fell_during_training(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runner = _runner(tmp_path)
    runner.run()
    for sid in ("model:target", "model:src_neox"):
        path = runner.path(sid)
        assert (path / "model.safetensors").exists()
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        ids = tok("The licensee shall not sublicense the Software.", return_tensors="pt").input_ids
        assert torch.isfinite(model(ids, labels=ids).loss)
        losses = [json.loads(line)["loss"] for line in (path / "train_log.jsonl").read_text().splitlines()]
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2


def _cli(workdir: Path, recipe: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fusebench.cli", "run", str(recipe), *extra,
                             "--only", "model:target", "--workdir", str(workdir),
                             "--results", str(workdir / "results"), "--reports", str(workdir / "reports")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_run_killed_mid_training_resumes_to_identical_weights(tmp_path):
    # enough steps that the run is still training when the first checkpoint appears, even on an idle machine
    steps = ["models.target.train.steps=150", "models.target.train.checkpoint_every=4"]
    clean = _cli(tmp_path / "clean", SMOKE, *steps)
    assert clean.wait(timeout=300) == 0, clean.stderr.read().decode()[-2000:]

    killed_dir = tmp_path / "killed"
    proc = _cli(killed_dir, SMOKE, *steps)
    deadline = time.time() + 240
    while not list(killed_dir.glob("cache/model/target-*.partial/_resume/step-*")):
        assert proc.poll() is None and time.time() < deadline, "training finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(killed_dir.glob("cache/model/target-*/.stage.json")), "a killed stage must not look finished"

    resumed = _cli(killed_dir, SMOKE, *steps)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    assert "resuming" in resumed.stderr.read().decode()
    clean_weights = next((tmp_path / "clean").glob("cache/model/target-*/model.safetensors")).read_bytes()
    resumed_weights = next(killed_dir.glob("cache/model/target-*/model.safetensors")).read_bytes()
    assert clean_weights == resumed_weights


@pytest.mark.parametrize("override, expected", [
    ("models.target.trian.steps=3", ["models.target.trian", "unknown key", "did you mean 'train'"]),
    ("models.target.train.lr=fast", ["models.target.train.lr", "valid number", "'fast'"]),
    ("models.kd.teachers=[teachr]", ["models.kd.teachers", "unknown model 'teachr'", "did you mean 'teacher'"]),
    ("models.target.arch=gpt3", ["models.target", "unknown arch 'gpt3'", "llama, gpt_neox, mpt"]),
    ("models.fusellm.fusion.function=minc", ["models.fusellm.fusion.function", "'minc'", "did you mean 'mince'"]),
    ("evaluate.suites=[perplexty]", ["evaluate.suites", "'perplexty'", "did you mean 'perplexity'"]),
])
def test_recipe_errors_name_the_file_the_key_and_the_closest_valid_names(override, expected, capsys, tmp_path):
    assert main(["plan", str(SMOKE), override, "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "smoke.yaml" in err or "models." in err or "evaluate." in err
    for fragment in expected:
        assert fragment in err
    assert "Traceback" not in err


def test_missing_recipe_and_unwritable_workdir_are_clear_errors(capsys, tmp_path):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["run", str(SMOKE), "--only", "corpus:legal", "--workdir", str(blocker / "w")]) == 2
    assert "cannot write to the workdir" in capsys.readouterr().err


def test_recipe_include_and_overrides_compose(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"include: {SMOKE}\nname: child\nmodels:\n  target:\n    train: {{steps: 3}}\n")
    recipe = load_recipe(child, ["models.target.train.lr=2e-5"])
    assert recipe.name == "child"
    assert recipe.models["target"].train.steps == 3
    assert recipe.models["target"].train.lr == 2e-5
    assert recipe.models["target"].train.seq_len == 64  # kept from the included recipe
    with pytest.raises(FusebenchError, match="not of the form"):
        load_recipe(child, ["models.target.train.lr"])
