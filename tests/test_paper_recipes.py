"""The paper-scale recipes: they validate, `fusebench plan` costs them offline, and the ablations change only what
they are meant to change (so, sharing the paper's workdir, they rerun only the stages that differ)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fusebench.pipeline.graph import build_stages
from fusebench.pipeline.recipe import load_recipe
from fusebench.pipeline.runner import Runner

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
PAPER = REPO / "recipes" / "paper.yaml"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_builds_its_stage_graph(path):
    recipe = load_recipe(path)
    stages = build_stages(recipe)
    assert stages or not recipe.models, f"{path.name} defines models but no stages"  # fragments only define data


def test_plan_of_the_paper_runs_offline_and_prints_every_stage_kind_and_the_estimates(tmp_path):
    # an empty HF home: nothing cached, and the hub unreachable by flag, so plan must fall back to stated sizes
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "plan", str(PAPER), "--workdir",
                           str(tmp_path / "runs")], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for kind in ("corpus:", "chunks:", "model:", "extract:", "vocabmap:", "align:", "eval:"):
        assert f" {kind}" in out, f"plan does not show any {kind} stage"
    assert "estimates (" in out and "GPU-h" in out and "store ~" in out
    assert "6.74B params" in out and "stated size" in out       # Llama-2-7B without its config
    assert "~1.8B tokens (stated size of JeanKaddour/minipile" in out
    assert "model:fusellm" in out and "trains 1.8B of 1.8B corpus tokens (100%; 6866 steps × 128 seqs × 2048" in out
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir()), "plan downloaded"
    assert elapsed < 60


def test_plan_names_hub_ids_revisions_and_datasets_and_gpu_hours_only_for_gpu_stages(tmp_path):
    from fusebench.pipeline.estimate import describe_plan

    recipe = load_recipe(PAPER, ["models.mpt.revision=refs/pr/1", "models.clm.train.steps=100"])
    lines = describe_plan(recipe)
    text = "\n".join(lines)
    for name, hub in (("target", "meta-llama/Llama-2-7b-hf @ main"), ("openllama", "open_llama_7b_v2 @ main"),
                      ("mpt", "mosaicml/mpt-7b @ refs/pr/1"), ("llama2_13b", "meta-llama/Llama-2-13b-hf @ main")):
        row = next(line for line in lines if line.strip().startswith(name + " "))
        assert hub in row, row
    assert any("minipile" in line and "hub dataset JeanKaddour/minipile split train" in line for line in lines)
    stage_rows = [line.strip() for line in lines if line.strip().startswith(("extract:", "align:", "model:"))]
    for row in stage_rows:  # GPU-hours exactly for the stages that run on GPUs
        assert ("GPU-h" in row) == row.startswith(("extract:", "model:")), row
    assert any(r.startswith("align:") and "CPU only" in r for r in stage_rows)
    # Llama-2-13B shares Llama-2-7B's tokenizer: KD extracts it but never aligns it
    assert not any("llama2_13b" in r for r in stage_rows if r.startswith("align:"))
    # corpus tokens vs trained tokens: one epoch by default, a cap where the recipe sets steps
    fused = next(r for r in stage_rows if r.startswith("model:fusellm"))
    assert "trains 1.8B of 1.8B corpus tokens (100%; 6866 steps" in fused and "one epoch of packed chunks" in fused
    clm = next(r for r in stage_rows if r.startswith("model:clm"))
    assert "trains 26.2M of 1.8B corpus tokens (1%; 100 steps" in clm and "one epoch would be 6866 steps" in text


def test_plan_reads_a_local_model_config_for_its_exact_size(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from fusebench.pipeline.estimate import describe_plan

    recipe_path = tmp_path / "local.yaml"
    recipe_path.write_text(yaml.safe_dump({"name": "local", "models": {"m": {"path": str(tiny_llama_dir)}}}))
    lines = describe_plan(load_recipe(recipe_path))
    exact = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llama_dir).parameters())
    row = next(line for line in lines if line.strip().startswith("m "))
    assert "from its config" in row and f"{exact / 1e3:.3g}k params" in row


def _leaves(node, prefix=()) -> dict:
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, (*prefix, str(key))).items()}
    return {".".join(prefix): node}


ABLATIONS = {
    "paper_ablation_vocab_em.yaml": {"models.fusellm.fusion.vocab_map": "em"},
    "paper_ablation_avgce.yaml": {"models.fusellm.fusion.function": "avgce"},
    "paper_ablation_one_source.yaml": {"models.fusellm.teachers": ["openllama"]},
}


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_differs_from_the_paper_only_in_its_knob(name):
    paper = _leaves(load_recipe(PAPER).model_dump(by_alias=True))
    ablation = _leaves(load_recipe(REPO / "recipes" / name).model_dump(by_alias=True))
    changed = {k: ablation.get(k) for k in paper.keys() | ablation.keys() if paper.get(k) != ablation.get(k)}
    expected = {**ABLATIONS[name], "name": name.removesuffix(".yaml"), "evaluate.models": ["fusellm"]}
    assert changed.keys() == expected.keys() | {"description"}
    assert all(changed[k] == v for k, v in expected.items())


@pytest.mark.parametrize("name,rerun_prefixes", [
    ("paper_ablation_vocab_em.yaml", ("vocabmap:openllama", "vocabmap:mpt", "align:openllama", "align:mpt")),
    ("paper_ablation_avgce.yaml", ()),
    ("paper_ablation_one_source.yaml", ()),
])
def test_ablation_in_the_paper_workdir_reruns_only_the_stages_it_changes(name, rerun_prefixes, tmp_path):
    paper = Runner(build_stages(load_recipe(PAPER)), tmp_path)
    ablation = Runner(build_stages(load_recipe(REPO / "recipes" / name)), tmp_path)
    paper_keys = {s.key for s in paper.stages.values()}
    rerun = {sid for sid, s in ablation.stages.items() if s.key not in paper_keys}
    always = {"model:fusellm"} | {sid for sid in ablation.stages if sid.startswith("eval:fusellm.")}
    assert rerun == always | {sid for sid in ablation.stages if sid.startswith(rerun_prefixes)}


def test_accelerate_configs_load_as_accelerate_cluster_configs():
    from accelerate.commands.config.config_args import ClusterConfig

    kinds = {p.stem: ClusterConfig.from_yaml_file(str(p)) for p in (REPO / "configs" / "accelerate").glob("*.yaml")}
    assert {k: c.distributed_type.value for k, c in kinds.items()} == {
        "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED"}
    assert kinds["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2
    assert all(c.mixed_precision == "bf16" for c in kinds.values())


def test_slurm_script_is_valid_bash():
    script = REPO / "scripts" / "slurm" / "paper.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
