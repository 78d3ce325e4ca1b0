"""FuseChat's merges: VaRM (hand-computed weights; stock mergekit-yaml replays it exactly) and SCE via mergekit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusebench.errors import FusebenchError
from fusebench.merge import merge_models
from fusebench.merge.varm import varm_merge

Q0 = "model.layers.0.self_attn.q_proj.weight"
UP1 = "model.layers.1.mlp.up_proj.weight"


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _shifted(pivot: Path, out: Path, shifts: dict[str, float], noise_seed: int | None = None) -> Path:
    """The pivot with constants added to some tensors (and, optionally, small noise on every tensor)."""
    model = AutoModelForCausalLM.from_pretrained(str(pivot))
    gen = torch.Generator().manual_seed(noise_seed or 0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if noise_seed is not None:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
            if name in shifts:
                p.add_(shifts[name])
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(pivot)).save_pretrained(out)
    return out


def _replay(merged: Path, out: Path) -> Path:
    done = subprocess.run([str(Path(sys.executable).with_name("mergekit-yaml")), "mergekit_config.yml", str(out)],
                          cwd=merged, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _max_diff(a: Path, b: Path) -> float:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 10
    return max(float((ta[n].double() - tb[n].double()).abs().max()) for n in ta)


def test_varm_weights_are_each_targets_share_of_the_squared_change_hand_computed(tmp_path, tiny_llama_dir):
    # target 1 moves q_proj of layer 0 by +0.01 everywhere, target 2 by +0.02: squared changes n*1e-4 and n*4e-4,
    # so weights 1/5 and 4/5 and the merged matrix is pivot + 0.2*0.01 + 0.8*0.02 = pivot + 0.018.
    # up_proj of layer 1 moves only in target 2: weights 0 and 1. Nothing else moves: 1/2 and 1/2.
    t1 = _shifted(tiny_llama_dir, tmp_path / "t1", {Q0: 0.01})
    t2 = _shifted(tiny_llama_dir, tmp_path / "t2", {Q0: 0.02, UP1: -0.05})
    out = varm_merge(tiny_llama_dir, [t1, t2], tmp_path / "varm")
    import json

    w = json.loads((out / "varm_weights.json").read_text())["weights"]
    assert w[Q0] == pytest.approx([0.2, 0.8], abs=1e-4)
    assert w[UP1] == [0.0, 1.0]
    assert w["model.norm.weight"] == [0.5, 0.5]
    pivot, merged = _tensors(tiny_llama_dir), _tensors(out)
    torch.testing.assert_close(merged[Q0], pivot[Q0] + 0.018, atol=2e-6, rtol=0)
    torch.testing.assert_close(merged[UP1], pivot[UP1] - 0.05, atol=2e-6, rtol=0)
    torch.testing.assert_close(merged["model.norm.weight"], pivot["model.norm.weight"], atol=0, rtol=0)


def test_varm_output_replays_with_stock_mergekit_yaml_exactly(tmp_path, tiny_llama_dir):
    t1 = _shifted(tiny_llama_dir, tmp_path / "t1", {}, noise_seed=1)
    t2 = _shifted(tiny_llama_dir, tmp_path / "t2", {}, noise_seed=2)
    t3 = _shifted(tiny_llama_dir, tmp_path / "t3", {Q0: 0.1}, noise_seed=3)
    out = varm_merge(tiny_llama_dir, [t1, t2, t3], tmp_path / "varm")
    config = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert config["merge_method"] == "linear"
    # one {filter, value} per tensor, longest name first, and a filterless default last; per tensor the three
    # targets' values sum to 1
    per_model = [{c.get("filter"): c["value"] for c in m["parameters"]["weight"]} for m in config["models"]]
    filters = [c.get("filter") for c in config["models"][0]["parameters"]["weight"]]
    assert filters[-1] is None and Q0 in filters
    assert [len(f) for f in filters[:-1]] == sorted((len(f) for f in filters[:-1]), reverse=True)
    for f in filters[:-1]:
        assert sum(m[f] for m in per_model) == pytest.approx(1.0, abs=1e-12)
    # an independent computation of every merged tensor from the three targets and the pivot
    p, ts, merged = _tensors(tiny_llama_dir), [_tensors(t) for t in (t1, t2, t3)], _tensors(out)
    for name in p:
        d = torch.stack([(t[name].double() - p[name].double()).square().sum() for t in ts])
        expected = sum(wi * t[name].double() for wi, t in zip(d / d.sum(), ts))
        torch.testing.assert_close(merged[name].double(), expected, atol=2e-6, rtol=0, msg=name)
    assert _max_diff(out, _replay(out, tmp_path / "replay")) == 0.0


def test_varm_refuses_a_single_target(tmp_path, tiny_llama_dir):
    with pytest.raises(FusebenchError, match="two or more"):
        varm_merge(tiny_llama_dir, [tiny_llama_dir], tmp_path / "x")


def test_sce_through_the_merge_path_equals_stock_mergekit_yaml(tmp_path, tiny_llama_dir):
    t1 = _shifted(tiny_llama_dir, tmp_path / "t1", {}, noise_seed=4)
    t2 = _shifted(tiny_llama_dir, tmp_path / "t2", {}, noise_seed=5)
    block = {"merge_method": "sce", "base_model": str(tiny_llama_dir), "dtype": "float32",
             "parameters": {"select_topk": 0.5},
             "models": [{"model": str(t1)}, {"model": str(t2)}]}
    out = merge_models(block, tmp_path / "sce")
    merged, pivot = _tensors(out), _tensors(tiny_llama_dir)
    assert not torch.equal(merged[Q0], pivot[Q0])  # it did merge something
    assert _max_diff(out, _replay(out, tmp_path / "replay")) == 0.0


def test_a_recipe_varm_merge_needs_the_pivot_as_base_and_feeds_it_to_the_stage(tmp_path):
    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe

    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "smoke.yaml").read_text())
    data["models"]["merged"]["merge"] = {"method": "varm", "models": ["expert_legal", "expert_code"]}
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    with pytest.raises(FusebenchError) as err:
        load_recipe(recipe_file)
    assert "models.merged.merge" in str(err.value) and "base" in str(err.value)

    data["models"]["merged"]["merge"]["base"] = "src_neox"
    recipe_file.write_text(yaml.safe_dump(data))
    graph = GraphBuilder(load_recipe(recipe_file))
    merged = graph.model("merged")
    assert {graph.stages[i].id.split(":")[1].split("-")[0] for i in graph.stages[merged].inputs} == {
        "expert_legal", "expert_code", "src_neox"}
