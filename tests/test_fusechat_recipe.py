"""FuseChat in the recipe schema: `pairwise: true` (one fused model per source, sharing the pivot's stores) and
recipes/fusechat.yaml planned offline."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusebench.errors import FusebenchError
from fusebench.pipeline.graph import GraphBuilder
from fusebench.pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def _smoke_with_pairwise(tmp_path, **extra) -> Path:
    data = yaml.safe_load((REPO / "recipes" / "smoke.yaml").read_text())
    pair = copy.deepcopy(data["models"]["fusellm"])
    pair.update({"pairwise": True, "fusion": {**pair["fusion"], "function": "greater_gt_hard"}, **extra})
    data["models"]["pair"] = pair
    data["models"]["pair_varm"] = {"merge": {"method": "varm", "base": pair["init"], "models": ["pair"]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_pairwise_expands_into_one_fused_model_per_source_sharing_the_pivots_stores(tmp_path):
    recipe = load_recipe(_smoke_with_pairwise(tmp_path))
    sources = recipe.models["fusellm"].teachers
    children = [f"pair-{s}" for s in sources]
    assert "pair" not in recipe.models and len(sources) == 2
    for child, source in zip(children, sources):
        m = recipe.models[child]
        assert m.teachers == [source] and m.init == recipe.models["fusellm"].init
        assert m.fusion.function == "greater_gt_hard"
    assert recipe.models["pair_varm"].merge.models == children
    graph = GraphBuilder(recipe)
    inputs = [set(graph.stages[graph.model(c)].inputs) for c in children]
    shared = inputs[0] & inputs[1]  # the pivot's chunks, model and distribution store: one stage each
    assert {graph.stages[i].kind for i in shared} == {"chunks", "model", "extract"}
    assert all(any(graph.stages[i].kind == "align" and s in i for i in ins) for ins, s in zip(inputs, sources))
    assert set(graph.stages[graph.model("pair_varm")].inputs) == {graph.model(c) for c in children} | {
        graph.model(recipe.models["fusellm"].init)}


def test_pairwise_without_teachers_or_with_a_clashing_name_is_refused(tmp_path):
    with pytest.raises(FusebenchError, match=r"models\.pair\.pairwise: true needs `init`"):
        load_recipe(_smoke_with_pairwise(tmp_path, teachers=[]))
    data = yaml.safe_load(_smoke_with_pairwise(tmp_path).read_text())
    source = data["models"]["pair"]["teachers"][0]
    data["models"][f"pair-{source}"] = data["models"]["fusellm"]
    (tmp_path / "clash.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(FusebenchError, match="already defines"):
        load_recipe(tmp_path / "clash.yaml")


def test_plan_of_fusechat_runs_offline_with_pairwise_targets_merges_and_gpu_hours(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "plan", str(REPO / "recipes" / "fusechat.yaml"),
                           "--workdir", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for name in ("model:fusechat-src_mixtral", "model:fusechat-src_solar", "model:fusechat_varm",
                 "model:fusechat_sce", "vocabmap:src_mixtral->pivot.statistics@"):
        assert name in out, name
    stage_rows = [line.split()[1] for line in out.splitlines() if line.startswith("  · ")]
    assert len(stage_rows) == 20 and sum(r.startswith("extract:pivot@") for r in stage_rows) == 1  # one pivot store
    assert "hub openchat/openchat_3.5 @ main" in out and "7.24B params" in out
    assert "varm merge" in out and "sce merge" in out and "GPU-h" in out
