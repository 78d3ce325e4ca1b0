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


def test_lambda_sweep_plans_both_rules_at_05_07_09_and_shares_every_other_stage_with_tiny(tmp_path, capsys):
    assert main(["plan", str(RECIPES / "tiny_lambda.yaml"), "--workdir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    for name in ("fusellm_l05", "fusellm_l07", "fusellm", "fusellm_per_byte_l05", "fusellm_per_byte_l07",
                 "fusellm_per_byte", "clm"):
        assert f"model:{name} " in out and f"eval:{name}.perplexity" in out
    sweep = load_recipe(RECIPES / "tiny_lambda.yaml")
    for rule in ("mince", "mince_per_byte"):
        lambdas = {m.fusion.lam for m in sweep.models.values() if m.role == "fused" and m.fusion.function == rule}
        assert lambdas == {0.5, 0.7, 0.9}, rule
    tiny = {s.id: s.key for s in build_stages(load_recipe(RECIPES / "tiny.yaml"))}
    swept = {s.id: s.key for s in build_stages(sweep)}
    # same corpora, sources, stores, alignments and CLM control: run in tiny's workdir, only the new λs train
    for sid, key in tiny.items():
        if not sid.startswith("eval:"):
            assert swept[sid] == key, sid
    assert sorted(s for s in swept if s.startswith("model:") and s not in tiny) == [
        "model:fusellm_l05", "model:fusellm_l07", "model:fusellm_per_byte_l05", "model:fusellm_per_byte_l07"]


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
        _, test, _ = tiny_world_splits(spec.domain, spec.seed, 0, spec.test_chars, spec.test_passage_chars,
                                       spec.decontaminate, spec.spread_passages)
        assert len(test) >= 200, (name, len(test))
        assert sorted(map(len, test))[len(test) // 2] <= spec.test_passage_chars   # a longer line stays whole


@pytest.mark.parametrize("recipe", ["tiny.yaml", "pythia_domains.yaml"])
def test_no_test_passage_of_the_miniatures_is_text_their_models_trained_on(recipe):
    """Found by checking: 23 of 261 legal and 20 of 230 code test passages of tiny.yaml occurred verbatim in the
    teacher's training text (license boilerplate and library headers repeat across documents)."""
    from fusebench.data.corpora import tiny_world_splits

    recipe = load_recipe(RECIPES / recipe)
    trained_on = {m.train.corpus for m in recipe.models.values() if m.train} | {
        t.corpus for t in recipe.tokenizers.values() if t.corpus}
    train_text = "\n".join(doc for name in sorted(trained_on) for doc in tiny_world_splits(
        recipe.corpora[name].domain, recipe.corpora[name].seed, recipe.corpora[name].train_chars, 0)[0])
    lines = {s.strip() for s in train_text.splitlines() if len(s.strip()) >= 30}
    for name in recipe.evaluate.perplexity_corpora:
        spec = recipe.corpora[name]
        assert spec.decontaminate
        _, test, prov = tiny_world_splits(spec.domain, spec.seed, 0, spec.test_chars, spec.test_passage_chars, True,
                                          spec.spread_passages)
        assert len(set(test)) == len(test), name                                 # no passage scored twice
        assert not [p for p in test if p in train_text], name                     # none verbatim in training text
        assert not [p for p in test if any(s.strip() in lines for s in p.splitlines())], name   # nor a long line
        dropped = sum(s["decontamination"]["in_training_text"] for s in prov["sources"])
        if name in ("legal", "code"):
            assert dropped > 20, (name, dropped)        # where the boilerplate is, the rule really drops passages


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


def test_each_test_passage_is_traced_to_the_held_out_document_it_was_cut_from(tmp_path):
    """The clusters a report needs (passages of one source document are not independent): every passage lies in
    the document it is traced to, a corpus of whole documents has none, and a test file of other text is refused."""
    from fusebench.data import corpora
    from fusebench.data.provenance import corpus_clusters
    from fusebench.errors import FusebenchError
    from fusebench.jsonl import read_jsonl

    recipe = load_recipe(RECIPES / "tiny.yaml")
    spec = recipe.corpora["code"].model_copy(update={"test_chars": 60_000, "spread_passages": False})
    _, test, prov = corpora.tiny_world_splits("code", spec.seed, 0, spec.test_chars, spec.test_passage_chars, True)
    corpora.write_corpus(tmp_path / "code", ["unused"], test, prov)
    record = corpus_clusters(spec, tmp_path / "code")
    held_out = corpora._pools("code", spec.seed)["test"]
    assert len(record["of_doc"]) == len(test) == record["documents"]
    assert all(passage in held_out[int(owner.split("/")[2])] for passage, owner in zip(test, record["of_doc"]))
    assert 2 <= record["clusters"] < len(test) / 3          # 1000-character passages of whole modules
    assert record["test_sha256"] == corpora.hashlib.sha256((tmp_path / "code" / "test.jsonl").read_bytes()
                                                           ).hexdigest()
    assert corpus_clusters(spec.model_copy(update={"test_passage_chars": None}), tmp_path / "code") is None
    rows = read_jsonl(tmp_path / "code" / "test.jsonl")
    corpora.write_corpus(tmp_path / "edited", ["unused"], [r["text"] for r in rows[:-1]] + ["not from any module"],
                         prov)
    with pytest.raises(FusebenchError, match="1 of .* test passages"):
        corpus_clusters(spec, tmp_path / "edited")
    # publishing records them per lm-eval task, for the corpora scored in passages only
    from fusebench.pipeline.commands import _clusters

    whole = recipe.model_copy(update={"corpora": {**recipe.corpora, "code": spec}})
    assert _clusters(whole, {"corpus:code": tmp_path / "code", "model:clm": tmp_path}) == {"ppl_code": record}


@pytest.mark.parametrize("recipe", ["tiny.yaml", "pythia_domains.yaml"])
def test_spread_passages_score_as_many_source_documents_as_the_held_out_pool_offers(recipe):
    """Round robin over the held-out documents: the 200 scored passages of code came from 14 modules taken in order,
    26 spread (all the pool's modules with a passage that survives decontamination); the same passages each way,
    only their order (and so which are cut off by test_chars) differs, and provenance follows either order."""
    from fusebench.data import corpora
    from fusebench.data.provenance import passage_sources

    spec = load_recipe(RECIPES / recipe).corpora["code"]
    assert spec.spread_passages
    sources = {}
    for spread in (False, True):
        _, test, _ = corpora.tiny_world_splits("code", spec.seed, 0, 10 ** 7, spec.test_passage_chars, True, spread)
        ids = passage_sources("code", spec.seed, spec.test_passage_chars, test, spread)
        sources[spread] = (sorted(test), len(set(ids[:200])))
    assert sources[False][0] == sources[True][0]                     # the same passages, in another order
    assert sources[True][1] >= 25 and sources[False][1] <= 15


def test_spread_passages_without_passages_is_a_recipe_error():
    from fusebench.pipeline.recipe import CorpusSpec

    with pytest.raises(ValueError, match="spread_passages"):
        CorpusSpec(kind="tiny_world", domain="code", spread_passages=True)
