"""Statistics-based token alignment (FuseChat v2): DTW pair counts against a brute-force count, the `statistics`
vocab map's rule on hand-computed cases and on real tokenizers, and its figures in `fusebench align --json`."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml

from fusebench.align import VOCAB_MAPS, build_vocab_map, tokenize_for_alignment
from fusebench.align.dtw import dtw_reference
from fusebench.align.statistics import alignment_counts, statistics_choice
from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.models.real_tokenizers import load_real_tokenizer

SENTENCES = [
    "The quick brown foxes jumped over unbelievably lazy dogs.",
    "Tokenization differs: 12345 apples, naïve cafés and re-entrant locks.",
    "def load(path):\n    return json.loads(path.read_text())\n",
    "Unbelievably, the foxes were quick; the dogs were lazy.",
]


@pytest.fixture(scope="module")
def llama_mpt():
    return load_real_tokenizer("llama-2"), load_real_tokenizer("mpt")


def _brute_force_counts(source_tok, target_tok, texts) -> Counter:
    """Every (source id, target id) pair on the plain-Python DTW path of each text, counted one by one."""
    out: Counter = Counter()
    for text in texts:
        s, t = tokenize_for_alignment(source_tok, text), tokenize_for_alignment(target_tok, text)
        for i, j in dtw_reference(s, t).pairs.tolist():
            out[(s.ids[i], t.ids[j])] += 1
    return out


def test_alignment_counts_equal_a_brute_force_count_with_real_tokenizers(llama_mpt):
    source, target = llama_mpt
    counts = alignment_counts(source, target, SENTENCES)
    expected = _brute_force_counts(source, target, SENTENCES)
    assert counts.as_dict() == dict(expected)
    assert counts.documents == len(SENTENCES) and counts.matrix.shape == (len(source), len(target))
    assert max(expected.values()) > 1  # repeated words were counted more than once


def test_statistics_choice_weights_edit_distance_by_alignment_frequency():
    # "abc" -> "abd" (distance 1, paired once) vs "xyz" (distance 3, paired 9 times) of 10: 1 * 10/1 = 10 against
    # 3 * 10/9 = 3.33, so the frequent pairing wins although it is farther
    assert statistics_choice("abc", [(4, "abd", 1), (3, "xyz", 9)]) == 3
    # at equal frequency the nearer wins: 1 * 2/1 = 2 < 3 * 2/1 = 6
    assert statistics_choice("abc", [(4, "abd", 1), (3, "xyz", 1)]) == 4
    # a tie of weighted distances (1 * 6/2 = 2 * 6/4 = 3) goes to the higher count, then to the lower id
    assert statistics_choice("abc", [(8, "abx", 2), (9, "axx", 4)]) == 9
    assert statistics_choice("abc", [(8, "abx", 2), (5, "abx", 2)]) == 5


def test_statistics_map_keeps_exact_matches_uses_counts_else_mined(llama_mpt):
    source, target = llama_mpt
    stats = build_vocab_map("statistics", source, target, texts=SENTENCES).src_to_tgt
    em = build_vocab_map("em", source, target).src_to_tgt
    mined = build_vocab_map("mined", source, target).src_to_tgt
    matched = em >= 0
    np.testing.assert_array_equal(stats[matched], em[matched])
    counts = _brute_force_counts(source, target, SENTENCES)
    paired: dict[int, list[tuple[int, int]]] = {}
    for (s, t), c in counts.items():
        paired.setdefault(s, []).append((t, c))
    special = set(target.all_special_ids)
    from fusebench.align.vocab_map import _vocab_texts

    src_texts, tgt_texts = _vocab_texts(source), _vocab_texts(target)
    used = 0
    for s in np.flatnonzero(~matched).tolist():
        cands = [(t, tgt_texts[t], c) for t, c in paired.get(s, []) if t not in special]
        if cands:
            used += 1
            assert stats[s] == statistics_choice(src_texts[s], cands), source.convert_ids_to_tokens(s)
        else:
            assert stats[s] == mined[s]
    assert used >= 1  # the sentences do hold source tokens without an exact match that the counts decide
    assert (stats >= 0).all()


def test_statistics_map_needs_a_corpus(llama_mpt):
    assert "statistics" in VOCAB_MAPS
    with pytest.raises(FusebenchError, match="needs the texts"):
        build_vocab_map("statistics", *llama_mpt)


def test_align_json_reports_the_vocab_maps_coverage_and_agreement(capsys):
    text = "\n".join(SENTENCES)
    figures = {}
    for kind in ("mined", "statistics"):
        assert main(["align", "--source", "mpt", "--target", "llama-2", "--text", text, "--vocab-map", kind,
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["precision"] == 1.0 and 0 < out["coverage"] <= 1
        figures[kind] = out["vocab_map"]
    assert figures["statistics"]["kind"] == "statistics" and figures["statistics"]["coverage"] == 1.0
    # counted on this very text, the map sends at least as many aligned source tokens to the token used
    assert figures["statistics"]["agreement"] >= figures["mined"]["agreement"] > 0.5


def test_a_recipe_with_the_statistics_map_feeds_the_chunks_to_the_vocab_map_stage(tmp_path):
    from pathlib import Path

    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe

    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "smoke.yaml").read_text())
    data["models"]["fusellm"]["fusion"]["vocab_map"] = "statistics"  # two sources, tokenizers unlike the target's
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    graph = GraphBuilder(load_recipe(tmp_path / "r.yaml"))
    graph.model("fusellm")
    vmaps = [s for s in graph.stages.values() if s.id.startswith("vocabmap:")]
    assert [s.id for s in vmaps] == ["vocabmap:bpe->sp.statistics@mix.sp.64.n32"]
    assert [graph.stages[i].kind for i in vmaps[0].inputs] == ["tokenizer", "tokenizer", "chunks"]
    aligns = [s for s in graph.stages.values() if s.id.startswith("align:")]
    assert len(aligns) == 2 and all(vmaps[0].id in s.inputs for s in aligns)


def test_the_vocab_map_stage_counts_over_the_training_chunks(tmp_path):
    from pathlib import Path

    import scipy.sparse

    from fusebench.align.vocab_map import VocabMap
    from fusebench.models.tokenizers import load_tokenizer
    from fusebench.train.data import chunk_pieces

    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "smoke.yaml").read_text())
    data["models"]["fusellm"]["fusion"]["vocab_map"] = "statistics"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "r.yaml"), "--only", "vocabmap", "--workdir", str(tmp_path / "wd")]) == 0
    cache = tmp_path / "wd" / "cache"
    [stage] = (cache / "vocabmap").glob("*/vocab_map")
    [chunks] = (cache / "chunks").glob("*/chunks.jsonl")
    source, target = (load_tokenizer(next((cache / "tokenizer").glob(f"{n}-*/tokenizer.json")).parent)
                      for n in ("bpe", "sp"))
    texts = [p for line in chunks.read_text().splitlines() for p in chunk_pieces(json.loads(line))]
    expected = alignment_counts(source, target, texts)
    assert (scipy.sparse.load_npz(stage / "alignment_counts.npz") != expected.matrix).nnz == 0
    saved = VocabMap.load(stage, source, target)
    assert saved.kind == "statistics"
    np.testing.assert_array_equal(saved.src_to_tgt, build_vocab_map("statistics", source, target,
                                                                    counts=expected).src_to_tgt)


def test_statistics_aligner_mixes_an_n_to_1_block_by_corpus_counts_hand_computed():
    import scipy.sparse

    from fusebench.align.transfer import transfer_distributions
    from fusebench.align.weighted import block_members, weight_blocks
    from fusebench.extract.store import SequenceDistributions

    # source tokens 10 11 12, target tokens 20 21; target 21 spells source 11 + 12 (an n:1 block)
    source = SequenceDistributions(input_ids=np.array([10, 11, 12]), topk_ids=np.array([[1, 2], [3, 4], [5, 6]]),
                                   topk_logprobs=np.log(np.array([[.6, .4], [.7, .3], [.9, .1]], np.float32)),
                                   gold_logprobs=np.zeros(2, np.float32), sequence_ce=1.0)
    pairs = np.array([[0, 0], [1, 1], [2, 1]])
    identity = np.arange(13, dtype=np.int32)
    plain = transfer_distributions(source, np.array([20, 21]), pairs, identity, source_text="x", target_text="x")
    assert plain.topk_ids[1].tolist() == [5, 6]  # fusebench's rule: the block's last source alone
    assert block_members(pairs, 3, 2, plain.source_index) == {1: pytest.approx(np.array([1, 2]))}
    counts = scipy.sparse.csr_matrix(([1, 3], ([11, 12], [21, 21])), shape=(13, 22))  # weights 1/4 and 3/4
    mixed = weight_blocks(plain, source, pairs, identity, counts)
    # 0.75 * {5: .9, 6: .1} + 0.25 * {3: .7, 4: .3} = {5: .675, 3: .175, 6: .075, 4: .075}; the top 2 are kept
    assert mixed.topk_ids[1].tolist() == [5, 3]
    np.testing.assert_allclose(np.exp(mixed.topk_logprobs[1]), [0.675, 0.175], rtol=1e-6)
    np.testing.assert_array_equal(mixed.topk_ids[0], plain.topk_ids[0])  # 1:1 positions are untouched
    np.testing.assert_array_equal(mixed.source_index, plain.source_index)
    uncounted = weight_blocks(plain, source, pairs, identity, scipy.sparse.csr_matrix((13, 22), dtype=np.int64))
    np.testing.assert_array_equal(uncounted.topk_ids, plain.topk_ids)  # never counted: the plain transfer stays


def test_statistics_aligner_in_the_align_stage_changes_only_multi_source_blocks(tmp_path, capsys):
    from pathlib import Path

    import scipy.sparse

    from fusebench.align import tokenization_from_ids
    from fusebench.align.corpus import AlignedStore, _text
    from fusebench.align.document import align_document
    from fusebench.align.vocab_map import VocabMap
    from fusebench.align.weighted import block_members
    from fusebench.extract.store import DistributionStore
    from fusebench.models.tokenizers import load_tokenizer

    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "smoke.yaml").read_text())
    data["models"]["fusellm"]["fusion"].update(aligner="statistics", vocab_map="mined")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    assert main(["plan", str(tmp_path / "r.yaml"), "--workdir", str(tmp_path / "wd")]) == 2
    assert "set fusion.vocab_map: statistics" in capsys.readouterr().err
    data["models"]["fusellm"]["fusion"]["vocab_map"] = "statistics"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "r.yaml"), "--only", "align:src_neox", "--workdir", str(tmp_path / "wd")]) == 0
    cache = tmp_path / "wd" / "cache"
    [aligned_dir] = (cache / "align").glob("src_neox[-@]*/store")
    [vmap_dir] = (cache / "vocabmap").glob("*/vocab_map")
    [src_dir] = (cache / "extract").glob("src_neox[-@]*/store")
    [tgt_dir] = (cache / "extract").glob("target@*/store")
    source_tok, target_tok = (load_tokenizer(next((cache / "tokenizer").glob(f"{n}-*/tokenizer.json")).parent)
                              for n in ("bpe", "sp"))
    aligned = AlignedStore(aligned_dir)
    assert aligned.meta["aligner"] == "statistics" and aligned.meta["quality"]["precision"] == 1.0
    vmap = VocabMap.load(vmap_dir).src_to_tgt
    src, tgt = DistributionStore.open(src_dir), DistributionStore.open(tgt_dir)
    changed = blocks = 0
    for i in range(len(tgt)):
        s, t = src.sequence(i), tgt.sequence(i)
        st, tt = tokenization_from_ids(source_tok, s.input_ids), tokenization_from_ids(target_tok, t.input_ids)
        kw = dict(source_text=_text(source_tok, s.input_ids), target_text=_text(target_tok, t.input_ids))
        plain = align_document(s, st, tt, vmap, aligner="dtw", fallback="next", **kw).aligned
        if plain is None:
            continue
        got = aligned.sequence(i)
        multi = block_members(dtw_pairs(st, tt), len(st), len(tt), plain.source_index)
        differs = {j for j in range(len(tt)) if not np.array_equal(got.ids[j], plain.topk_ids[j])}
        assert differs <= set(multi), i  # only positions closing a block of several source tokens change
        changed, blocks = changed + len(differs), blocks + len(multi)
    assert blocks > 0 and changed > 0
    assert scipy.sparse.load_npz(vmap_dir / "alignment_counts.npz").sum() > 0


def dtw_pairs(source, target):
    from fusebench.align.dtw import dtw

    return dtw(source, target).pairs
