"""DTW and offset alignment: hand-checked optima, the fast path against the plain reference, real tokenizers."""

from __future__ import annotations

import numpy as np
import pytest

from fusebench.align import (ALIGNERS, Tokenization, align_by_offsets, get_aligner, normalize_tokens,
                             tokenization_from_ids, tokenize_for_alignment)
from fusebench.align.dtw import dtw, dtw_reference
from fusebench.errors import FusebenchError


@pytest.fixture(scope="module")
def llama_and_mpt():
    """The real Llama-2 and MPT tokenizers (rebuilt from llama.cpp's GGUF vocabularies, cached on disk)."""
    from fusebench.models.real_tokenizers import load_real_tokenizer

    return load_real_tokenizer("llama-spm"), load_real_tokenizer("mpt")


def plain(*tokens: str) -> Tokenization:
    return Tokenization(list(tokens), convention="plain")


def assert_valid_path(pairs: np.ndarray, n: int, m: int) -> None:
    assert pairs.dtype == np.int32 and pairs.shape[1] == 2
    assert pairs[0].tolist() == [0, 0] and pairs[-1].tolist() == [n - 1, m - 1]
    steps = np.diff(pairs, axis=0).tolist()
    assert all(step in ([1, 0], [0, 1], [1, 1]) for step in steps)


# --- hand-checked optima -------------------------------------------------------------------------------------


def test_dtw_pairs_a_source_token_with_both_copies_of_a_target_token():
    # cell costs (Levenshtein): C = [[0, 2, 2],   "ab" vs ab, x, x
    #                                [2, 0, 0]]   "x"  vs ab, x, x
    # accumulated: [[0, 2, 4], [2, 0, 0]]; walking back from (1, 2): left (0) beats diag (2) and up (4), then the
    # diagonal from (1, 1) to (0, 0). Total cost 0.
    result = dtw(plain("ab", "x"), plain("ab", "x", "x"))
    assert result.pairs.tolist() == [[0, 0], [1, 1], [1, 2]]
    assert result.cost == 0


def test_dtw_cost_is_the_minimum_over_paths_for_split_tokens():
    # C = [[1, 2],   "ab" vs a, bc
    #      [1, 1]]   "c"  vs a, bc
    # accumulated: [[1, 3], [2, 2]]: at (1, 1) the diagonal (1) beats up (3) and left (2) -> cost 1 + 1 = 2.
    result = dtw(plain("ab", "c"), plain("a", "bc"))
    assert result.pairs.tolist() == [[0, 0], [1, 1]]
    assert result.cost == 2


def test_dtw_prefers_the_diagonal_when_all_three_predecessors_tie():
    # C = [[1, 0], [0, 1]]; accumulated [[1, 1], [1, 2]]: all three paths cost 2, the diagonal is chosen.
    result = dtw(plain("a", "b"), plain("b", "a"))
    assert result.pairs.tolist() == [[0, 0], [1, 1]]
    assert result.cost == 2


def test_dtw_prefers_advancing_the_source_over_the_target_on_a_tie():
    # C = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]; accumulated [[1, 1, 2], [1, 2, 1], [2, 1, 2]].
    # At (2, 2): diag 2, up 1, left 1 -> up (source advances alone) wins the tie; then the diagonal from (1, 2) to
    # (0, 1), then left to (0, 0). The mirror path (0,0),(1,0),(2,1),(2,2) also costs 2 and must not be chosen.
    result = dtw(plain("a", "b", "a"), plain("b", "a", "b"))
    assert result.pairs.tolist() == [[0, 0], [0, 1], [1, 2], [2, 2]]
    assert result.cost == 2


def test_dtw_compares_word_start_markers_of_both_families_as_spaces():
    source = Tokenization(["▁the", "▁end", "<0x0A>"], convention="metaspace")
    target = Tokenization(["Ġthe", "Ġend", "Ċ"], convention="byte_level")
    result = dtw(source, target)
    assert result.pairs.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert result.cost == 0


def test_normalisation_maps_bytes_of_both_families_to_the_same_text():
    assert normalize_tokens(["Ġthe", "Ċ", "Ã©", "the"], "byte_level") == [" the", "\n", "é", "the"]
    assert normalize_tokens(["▁the", "<0x0A>", "the"], "metaspace") == [" the", "\n", "the"]
    # a lone byte of a multi-byte character is the same character whichever tokenizer split it off
    assert normalize_tokens(["Ã"], "byte_level") == normalize_tokens(["<0xC3>"], "metaspace")


# --- the fast path equals the reference ----------------------------------------------------------------------


def test_dtw_matches_reference_on_random_sequences():
    rng = np.random.default_rng(0)
    alphabet = ["a", "b", "ab", "ba", "abc", " a", "c", "", "bca"]
    for _ in range(300):
        source = plain(*(alphabet[k] for k in rng.integers(0, len(alphabet), rng.integers(1, 14))))
        target = plain(*(alphabet[k] for k in rng.integers(0, len(alphabet), rng.integers(1, 14))))
        fast, reference = dtw(source, target), dtw_reference(source, target)
        assert fast.cost == reference.cost
        assert fast.pairs.tolist() == reference.pairs.tolist()


def test_dtw_matches_reference_on_real_llama_and_mpt_tokens(llama_and_mpt, stdlib_texts):
    llama, mpt = llama_and_mpt
    text = stdlib_texts[0][:1500]
    source, target = tokenize_for_alignment(llama, text), tokenize_for_alignment(mpt, text)
    fast, reference = dtw(source, target), dtw_reference(source, target)
    assert fast.cost == reference.cost
    assert np.array_equal(fast.pairs, reference.pairs)
    assert_valid_path(fast.pairs, len(source), len(target))
    assert 0 < fast.cost < len(fast.pairs)  # mostly identical tokens: less than one edit per pair on average


def test_dtw_matches_reference_on_trained_bpe_and_unigram_tokenizers(bpe_tokenizer_dir, unigram_tokenizer_dir,
                                                                     stdlib_texts):
    from fusebench.models.tokenizers import load_tokenizer

    text = stdlib_texts[1][:800]
    source = tokenize_for_alignment(load_tokenizer(unigram_tokenizer_dir), text)
    target = tokenize_for_alignment(load_tokenizer(bpe_tokenizer_dir), text)
    assert (source.convention, target.convention) == ("metaspace", "byte_level")
    assert dtw(source, target).cost == dtw_reference(source, target).cost


def test_dtw_refuses_an_empty_sequence():
    with pytest.raises(FusebenchError, match="empty token sequence"):
        dtw(plain(), plain("a"))


# --- offsets -------------------------------------------------------------------------------------------------


def test_offsets_aligner_pairs_tokens_covering_the_same_characters(llama_and_mpt):
    llama, mpt = llama_and_mpt
    text = "Hello world,\n the end"
    source, target = tokenize_for_alignment(llama, text), tokenize_for_alignment(mpt, text)
    assert source.tokens == ["▁Hello", "▁world", ",", "<0x0A>", "▁the", "▁end"]
    assert target.tokens == ["Hello", "Ġworld", ",", "Ċ", "Ġthe", "Ġend"]
    result = align_by_offsets(source, target)
    assert result.pairs.tolist() == [[k, k] for k in range(6)]
    assert result.cost == 1  # only "▁Hello" vs "Hello" differ (SentencePiece's dummy prefix space)
    assert result.cost == dtw(source, target).cost


def test_offsets_aligner_keeps_byte_pieces_of_one_character_together(llama_and_mpt):
    llama, mpt = llama_and_mpt
    text = "a 🦙 b"
    source, target = tokenize_for_alignment(llama, text), tokenize_for_alignment(mpt, text)
    result = align_by_offsets(source, target)
    assert_valid_path(result.pairs, len(source), len(target))
    emoji_src = [k for k, tok in enumerate(source.tokens) if tok.startswith("<0x")]
    emoji_tgt = [k for k, (lo, hi) in enumerate(target.offsets) if text[lo:hi] == "🦙"]
    assert len(emoji_src) == 4 and len(emoji_tgt) >= 2
    paired = {(i, j) for i, j in result.pairs.tolist()}
    # every byte piece on one side pairs only with byte pieces of the same emoji on the other
    for i in emoji_src:
        assert {j for (a, j) in paired if a == i} <= set(emoji_tgt)
    assert result.cost >= dtw(source, target).cost  # never better than the optimum


def test_offsets_aligner_works_from_token_ids_alone(llama_and_mpt):
    # distribution stores keep ids, not character offsets: the aligner reads where tokens end from their texts
    llama, mpt = llama_and_mpt
    text = "some text, 🦙 and\n    more"
    source, target = tokenize_for_alignment(llama, text), tokenize_for_alignment(mpt, text)
    from_ids = align_by_offsets(tokenization_from_ids(llama, source.ids), tokenization_from_ids(mpt, target.ids))
    assert from_ids.pairs.tolist() == align_by_offsets(source, target).pairs.tolist()
    assert_valid_path(from_ids.pairs, len(source), len(target))


def test_aligner_registry_names_the_valid_aligners_for_an_unknown_name():
    assert set(ALIGNERS) == {"dtw", "offsets", "statistics"}
    with pytest.raises(FusebenchError, match="dtw, offsets, statistics"):
        get_aligner("needleman")
