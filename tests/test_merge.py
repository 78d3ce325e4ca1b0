"""Weight merging through mergekit on real tiny models: every tensor checked against the method's formula."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusebench.errors import FusebenchError
from fusebench.merge import merge_models


def _state(path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(str(path)).state_dict()


def _finetuned(base_dir: Path, out: Path, seed: int, scale: float = 0.01) -> Path:
    """A stand-in for a fine-tuned expert: the base plus a small random task vector on every parameter."""
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def experts(tmp_path_factory, tiny_neox_pair) -> tuple[Path, Path, Path]:
    """(base, expert 1, expert 2) sharing one architecture and tokenizer."""
    base = tiny_neox_pair[0]
    root = tmp_path_factory.mktemp("experts")
    return base, _finetuned(base, root / "ft1", seed=11), _finetuned(base, root / "ft2", seed=12)


def test_linear_merge_is_the_weighted_parameter_average(tmp_path, tiny_neox_pair):
    out = merge_models({"method": "linear", "models": [{"path": str(tiny_neox_pair[0]), "weight": 1.0},
                                                       {"path": str(tiny_neox_pair[1]), "weight": 3.0}]},
                       tmp_path / "linear")
    a, b, merged = _state(tiny_neox_pair[0]), _state(tiny_neox_pair[1]), _state(out)
    assert merged.keys() == a.keys()
    for name in a:
        torch.testing.assert_close(merged[name], (a[name] + 3 * b[name]) / 4, atol=1e-6, rtol=0, msg=name)
    assert (out / "model.safetensors").is_file()
    assert AutoTokenizer.from_pretrained(str(out)).get_vocab() == AutoTokenizer.from_pretrained(
        str(tiny_neox_pair[0])).get_vocab()


def test_task_arithmetic_with_weight_one_on_one_expert_reproduces_it(tmp_path, experts):
    base, ft1, _ = experts
    out = merge_models({"method": "task_arithmetic", "base_model": str(base), "models": [str(ft1)]}, tmp_path / "ta")
    expert, merged = _state(ft1), _state(out)
    for name in expert:
        torch.testing.assert_close(merged[name], expert[name], atol=1e-6, rtol=0, msg=name)


def test_task_arithmetic_adds_weighted_task_vectors_to_the_base(tmp_path, experts):
    base, ft1, ft2 = experts
    out = merge_models({"method": "task_arithmetic", "base_model": str(base),
                        "models": [{"path": str(ft1), "weight": 0.5}, {"path": str(ft2), "weight": 0.7}]},
                       tmp_path / "ta2")
    b, e1, e2, merged = _state(base), _state(ft1), _state(ft2), _state(out)
    for name in b:
        expected = b[name] + 0.5 * (e1[name] - b[name]) + 0.7 * (e2[name] - b[name])
        torch.testing.assert_close(merged[name], expected, atol=1e-6, rtol=0, msg=name)


def _ties_reference(base: torch.Tensor, experts: list[torch.Tensor], weights: list[float], density: float):
    """TIES as the paper states it: trim each task vector to its top-`density` magnitudes, elect a sign per
    element from the sum, and average the weighted entries that agree with it."""
    trimmed = []
    for expert, weight in zip(experts, weights):
        delta = (expert - base).flatten()
        keep = torch.zeros_like(delta, dtype=torch.bool)
        keep[delta.abs().topk(max(1, int(density * delta.numel()))).indices] = True
        trimmed.append(weight * delta * keep)
    deltas = torch.stack(trimmed)
    elected = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
    agrees = deltas.sign() == elected
    weight_sum = (torch.tensor(weights)[:, None] * agrees).sum(0)
    merged_delta = (deltas * agrees).sum(0) / torch.where(weight_sum == 0, 1.0, weight_sum)
    return base + merged_delta.view_as(base)


def test_ties_trims_elects_signs_and_averages_agreeing_task_vectors(tmp_path, experts):
    base, ft1, ft2 = experts
    out = merge_models({"method": "ties", "base_model": str(base),
                        "models": [{"path": str(ft1), "weight": 1.0, "density": 0.5},
                                   {"path": str(ft2), "weight": 0.5, "density": 0.5}]}, tmp_path / "ties")
    b, e1, e2, merged = _state(base), _state(ft1), _state(ft2), _state(out)
    for name in b:
        expected = _ties_reference(b[name], [e1[name], e2[name]], [1.0, 0.5], 0.5)
        torch.testing.assert_close(merged[name], expected, atol=1e-6, rtol=0, msg=name)
    embed = "gpt_neox.embed_in.weight"
    unchanged = (merged[embed] == b[embed]).float().mean().item()
    assert 0.1 < unchanged < 0.5  # trimming to half of each vector leaves ~1/4 of the entries at the base value
    assert not torch.equal(merged[embed], e1[embed]) and not torch.equal(merged[embed], e2[embed])


def test_mpt_merges_through_mergekits_inferred_layout(tmp_path, bpe_tokenizer_dir):
    from fusebench.models.build import ModelSize, build_model

    tok = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    dirs = []
    for seed in (0, 1):
        model = build_model("mpt", len(tok), ModelSize(hidden=64, layers=2, heads=4), tok.bos_token_id,
                            tok.eos_token_id, seed)
        model.save_pretrained(tmp_path / f"mpt{seed}")
        tok.save_pretrained(tmp_path / f"mpt{seed}")
        dirs.append(tmp_path / f"mpt{seed}")
    out = merge_models({"method": "linear", "models": [str(d) for d in dirs]}, tmp_path / "merged")
    a, b, merged = _state(dirs[0]), _state(dirs[1]), _state(out)
    for name in a:
        torch.testing.assert_close(merged[name], (a[name] + b[name]) / 2, atol=1e-6, rtol=0, msg=name)


def test_merging_different_architectures_fails_before_loading_naming_both_and_the_key(tmp_path, tiny_neox_dir,
                                                                                       tiny_llama_dir):
    with pytest.raises(FusebenchError) as err:
        merge_models({"method": "linear", "models": [str(tiny_neox_dir), str(tiny_llama_dir)]}, tmp_path / "x")
    message = str(err.value)
    assert "differ in 'model_type' ('gpt_neox' vs 'llama')" in message
    assert str(tiny_neox_dir) in message and str(tiny_llama_dir) in message
    assert not (tmp_path / "x").exists()  # refused before mergekit wrote anything


def test_merging_different_shapes_names_the_differing_key(tmp_path, tiny_neox_dir, bpe_tokenizer_dir):
    from fusebench.models.build import ModelSize, build_model

    tok = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    wide = build_model("gpt_neox", len(tok), ModelSize(hidden=96, layers=2, heads=4), tok.bos_token_id,
                       tok.eos_token_id, seed=0)
    wide.save_pretrained(tmp_path / "wide")
    tok.save_pretrained(tmp_path / "wide")
    with pytest.raises(FusebenchError, match=r"differ in 'hidden_size' \(64 vs 96\)"):
        merge_models({"method": "linear", "models": [str(tiny_neox_dir), str(tmp_path / "wide")]}, tmp_path / "x")


@pytest.mark.parametrize("spec, key", [
    ({"method": "ties", "models": ["a"]}, "set base_model"),
    ({"method": "linear", "models": ["a"], "base_model": "b"}, "takes no base_model"),
    ({"method": "task_arithmetic", "models": [{"path": "a", "density": 0.5}], "base_model": "b"}, "density"),
    ({"method": "slerp", "models": ["a"]}, "merge.method"),
    ({"method": "linear", "models": [{"path": "a", "wieght": 2}]}, "merge.models.0.wieght"),
])
def test_invalid_merge_settings_are_refused_naming_the_key(tmp_path, spec, key):
    with pytest.raises(FusebenchError, match="invalid merge settings") as err:
        merge_models(spec, tmp_path / "x")
    assert key in str(err.value)


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_saved_mergekit_config_replays_with_stock_mergekit_yaml_from_any_directory_to_identical_tensors(
        tmp_path, tiny_neox_pair):
    import subprocess
    import sys

    inputs_before = {p: sorted(x.name for x in Path(p).iterdir()) for p in tiny_neox_pair}
    # made the way the pipeline makes it: in a `.partial` directory renamed into place when finished
    partial, final = tmp_path / "cache" / "merged.partial", tmp_path / "cache" / "merged"
    merge_models({"method": "linear", "models": [{"path": str(tiny_neox_pair[0]), "weight": 1.0},
                                                 {"path": str(tiny_neox_pair[1]), "weight": 3.0}]},
                 partial, final_dir=final)
    out = partial.rename(final)
    text, card = (out / "mergekit_config.yml").read_text(), (out / "README.md").read_text()
    assert f"{final}/inputs/0" in text and f"{final}/inputs/1" in text
    assert ".partial" not in text and ".partial" not in card and f"{final}/inputs/1" in card   # no stale paths
    # GPT-NeoX inputs saved by transformers 5 lack the buffers mergekit's definition requires: the stored copies
    # carry them, the input directories themselves are untouched
    assert (out / "inputs" / "0" / "mergekit_buffers.safetensors").is_file()
    assert {p: sorted(x.name for x in Path(p).iterdir()) for p in tiny_neox_pair} == inputs_before
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mergekit_yaml = Path(sys.executable).with_name("mergekit-yaml")
    done = subprocess.run([str(mergekit_yaml), "../cache/merged/mergekit_config.yml", "replay"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, replayed = _tensors(out), _tensors(elsewhere / "replay")
    assert ours.keys() == replayed.keys() and "gpt_neox.embed_in.weight" in ours
    assert max((ours[n].float() - replayed[n].float()).abs().max().item() for n in ours) == 0.0


def test_a_mergekit_block_merges_like_the_short_form(tmp_path, experts):
    base, ft1, ft2 = experts
    block = {"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
             "models": [{"model": str(ft1), "parameters": {"weight": 0.5}},
                        {"model": str(ft2), "parameters": {"weight": 0.7}}]}
    out = merge_models(block, tmp_path / "block")
    short = merge_models({"method": "task_arithmetic", "base_model": str(base),
                          "models": [{"path": str(ft1), "weight": 0.5}, {"path": str(ft2), "weight": 0.7}]},
                         tmp_path / "short")
    a, b = _state(out), _state(short)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("block, key", [
    ({"merge_method": "linear", "models": [{"modle": "a"}]}, "models.0.model"),
    ({"merge_method": "linear", "models": [{"model": "a"}], "merge_methd": "ties"}, "merge_methd"),
    ({"merge_method": "linear"}, "Exactly one of 'models', 'slices', or 'modules'"),
])
def test_invalid_mergekit_blocks_are_refused_by_mergekits_schema(tmp_path, block, key):
    with pytest.raises(FusebenchError, match="invalid merge settings") as err:
        merge_models(block, tmp_path / "x")
    assert key in str(err.value)
    assert not (tmp_path / "x").exists()


def test_a_recipe_merge_accepts_a_mergekit_block_naming_recipe_models(tmp_path):
    import yaml

    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe

    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "smoke.yaml").read_text())
    data["models"]["merged"]["merge"] = yaml.safe_load("""
merge_method: task_arithmetic
base_model: src_neox
models:
  - model: expert_legal
    parameters: {weight: 0.6}
  - model: expert_code
    parameters: {weight: 0.4}
dtype: float32
""")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    recipe = load_recipe(recipe_file)
    spec = recipe.models["merged"].merge
    assert spec.models == ["expert_legal", "expert_code"] and spec.base == "src_neox"
    graph = GraphBuilder(recipe)
    merged = graph.model("merged")
    assert {graph.stages[i].id.split(":")[1].split("-")[0] for i in graph.stages[merged].inputs} == {
        "expert_legal", "expert_code", "src_neox"}

    recipe_file.write_text(recipe_file.read_text().replace("model: expert_code", "model: expert_cod"))
    with pytest.raises(FusebenchError) as err:
        load_recipe(recipe_file)
    assert "expert_cod" in str(err.value) and "expert_code" in str(err.value)
