"""The recipes of issue 19: the λ sweep is tiny.yaml plus two λ values, planned by `fusebench plan`, and the oracle
row is a first-class model of tiny.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusebench.cli import main
from fusebench.pipeline.graph import build_stages
from fusebench.pipeline.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_lambda_sweep_plans_fusellm_at_05_07_09_and_shares_every_other_stage_with_tiny(tmp_path, capsys):
    assert main(["plan", str(RECIPES / "tiny_lambda.yaml"), "--workdir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    for name in ("fusellm_l05", "fusellm_l07", "fusellm", "fusellm_oracle", "clm"):
        assert f"model:{name} " in out and f"eval:{name}.perplexity" in out
    sweep = load_recipe(RECIPES / "tiny_lambda.yaml")
    lambdas = {m.fusion.lam for n, m in sweep.models.items() if m.role == "fused" and m.fusion.function == "mince"}
    assert lambdas == {0.5, 0.7, 0.9}
    tiny = {s.id: s.key for s in build_stages(load_recipe(RECIPES / "tiny.yaml"))}
    swept = {s.id: s.key for s in build_stages(sweep)}
    # same corpora, sources, stores, alignments and CLM control: run in tiny's workdir, only the new λs train
    for sid, key in tiny.items():
        if not sid.startswith("eval:"):
            assert swept[sid] == key, sid
    assert sorted(s for s in swept if s.startswith("model:") and s not in tiny) == ["model:fusellm_l05",
                                                                                    "model:fusellm_l07"]


def test_tiny_has_the_oracle_and_per_byte_rows_beside_the_papers_mince():
    recipe = load_recipe(RECIPES / "tiny.yaml")
    functions = {n: m.fusion.function for n, m in recipe.models.items() if m.role == "fused"}
    assert functions == {"fusellm": "mince", "fusellm_per_byte": "mince_per_byte", "fusellm_oracle": "oracle"}
    assert {"fusellm", "fusellm_per_byte", "fusellm_oracle"} <= set(recipe.evaluate.models)


def test_a_held_out_document_is_scored_in_passages_cut_at_line_breaks():
    from fusebench.data.corpora import passages

    text = "\n".join(f"line {i:03d} " + "x" * 90 for i in range(25))      # 25 lines of 99 characters
    pieces = passages(text, 400)
    assert "\n".join(pieces) == text                                     # nothing lost, nothing reordered
    assert all(len(p) <= 400 for p in pieces[:-1]) and len(pieces) == 6  # 4 lines each; the 1-line tail joins
    assert passages("one very long line " * 100, 400) == ["one very long line " * 100]


@pytest.mark.parametrize("recipe", ["tiny.yaml", "pythia_domains.yaml"])
def test_every_perplexity_domain_of_the_miniatures_scores_at_least_200_test_documents(recipe):
    from fusebench.data.corpora import tiny_world_splits

    recipe = load_recipe(RECIPES / recipe)
    for name in recipe.evaluate.perplexity_corpora:
        spec = recipe.corpora[name]
        _, test, _ = tiny_world_splits(spec.domain, spec.seed, 0, spec.test_chars, spec.test_passage_chars)
        assert len(test) >= 200, (name, len(test))
        assert sorted(map(len, test))[len(test) // 2] <= spec.test_passage_chars   # a longer line stays whole


def test_the_leaderboards_whole_document_test_splits_are_unchanged(tmp_path):
    import json

    from fusebench.data.corpora import tiny_world_splits, write_corpus

    board = yaml.safe_load((RECIPES.parent / "results" / "leaderboard" / "board.yaml").read_text())
    world = load_recipe(RECIPES / "tiny_world.yaml")
    for task in board["suites"]["perplexity"]["tasks"].values():
        spec = world.corpora[task["rebuild"]["corpus"]]
        assert spec.test_passage_chars is None
        _, test, _ = tiny_world_splits(spec.domain, spec.seed, 0, spec.test_chars, spec.test_passage_chars)
        assert len(test) == task["documents"]
        write_corpus(tmp_path / spec.domain, ["(train not compared)"], test, {})
        manifest = json.loads((tmp_path / spec.domain / "manifest.json").read_text())
        assert manifest["splits"]["test"]["sha256"] == task["sha256"]       # the very file the board pins
