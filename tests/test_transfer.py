"""Distribution transfer from source positions/ids to target positions/ids: 1:1, n:1, 1:n, vocab mapping, fallback."""

from __future__ import annotations

import numpy as np
import pytest

from fusebench.align.transfer import PAD_ID, merge_duplicate_ids, transfer_distributions
from fusebench.errors import FusebenchError
from fusebench.extract.store import SequenceDistributions

NEG = -np.inf


def _source(topk_ids, topk_lp, input_ids=None) -> SequenceDistributions:
    topk_ids, topk_lp = np.asarray(topk_ids), np.asarray(topk_lp, dtype=np.float32)
    n = len(topk_ids)
    input_ids = np.arange(n) if input_ids is None else np.asarray(input_ids)
    return SequenceDistributions(input_ids, topk_ids, topk_lp, np.full(n - 1, -1.0, np.float32), 1.5)


def _transfer(src, target_ids, pairs, vocab_map, **kw):
    return transfer_distributions(src, np.asarray(target_ids), np.asarray(pairs, dtype=np.int32),
                                  np.asarray(vocab_map, dtype=np.int32), source_text="abc", target_text="abc", **kw)


IDENTITY = np.arange(20)


def test_one_to_one_positions_copy_the_source_distribution():
    src = _source([[3, 4], [5, 6], [7, 8]], [[-0.5, -1.0], [-0.2, -2.0], [-0.1, -3.0]])
    out = _transfer(src, [10, 11, 12], [(0, 0), (1, 1), (2, 2)], IDENTITY)
    np.testing.assert_array_equal(out.topk_ids, src.topk_ids)
    np.testing.assert_array_equal(out.topk_logprobs, src.topk_logprobs)
    np.testing.assert_array_equal(out.source_index, [0, 1, 2])
    assert out.sequence_ce == 1.5 and out.num_predicted == 2


def test_many_source_tokens_to_one_target_take_the_last_source():
    # sources 1 and 2 spell target 1: the group's next token is predicted by source 2
    src = _source([[1, 2], [3, 4], [5, 6], [7, 8]], np.full((4, 2), -1.0))
    out = _transfer(src, [10, 11, 12], [(0, 0), (1, 1), (2, 1), (3, 2)], IDENTITY)
    np.testing.assert_array_equal(out.source_index, [0, 2, 3])
    np.testing.assert_array_equal(out.topk_ids[1], [5, 6])


def test_one_source_token_to_many_targets_fills_the_last_and_falls_back_to_the_next_token_inside():
    # source 1 spells targets 1 and 2: target 2 gets it; target 1 predicts a piece inside it -> one-hot of target 2
    src = _source([[1, 2], [3, 4], [5, 6]], np.full((3, 2), -1.0))
    target = [10, 11, 12, 13]
    out = _transfer(src, target, [(0, 0), (1, 1), (1, 2), (2, 3)], IDENTITY)
    np.testing.assert_array_equal(out.source_index, [0, -1, 1, 2])
    np.testing.assert_array_equal(out.topk_ids[1], [12, PAD_ID])
    np.testing.assert_array_equal(out.topk_logprobs[1], [0.0, NEG])
    np.testing.assert_array_equal(out.topk_ids[2], [3, 4])


def test_current_fallback_reproduces_the_reference_off_by_one():
    src = _source([[1, 2], [3, 4], [5, 6]], np.full((3, 2), -1.0))
    out = _transfer(src, [10, 11, 12, 13], [(0, 0), (1, 1), (1, 2), (2, 3)], IDENTITY, fallback="current")
    np.testing.assert_array_equal(out.topk_ids[1], [11, PAD_ID])  # the input token itself, not what follows


def test_unmapped_ids_are_dropped_and_colliding_ids_merge_by_logsumexp():
    vocab_map = np.full(20, -1)
    vocab_map[[1, 2, 3]] = [7, 7, 9]  # 1 and 2 collide on 7; 4 has no counterpart
    src = _source([[1, 4, 2, 3], [4, 4, 4, 4]], [[-1.0, -1.5, -2.0, -3.0], [-1.0, -1.0, -1.0, -1.0]])
    out = _transfer(src, [10, 11], [(0, 0), (1, 1)], vocab_map)
    np.testing.assert_array_equal(out.topk_ids[0], [7, 9, PAD_ID, PAD_ID])
    np.testing.assert_allclose(out.topk_logprobs[0, :2], [np.logaddexp(-1.0, -2.0), -3.0], rtol=1e-6)
    # every id of position 1 is unmapped; it is the target's last position, so there is no next token either
    np.testing.assert_array_equal(out.topk_ids[1], [PAD_ID] * 4)
    assert out.source_index[1] == -1


def test_everything_unmapped_falls_back_to_the_next_target_token():
    src = _source([[4, 5], [1, 2]], np.full((2, 2), -1.0))
    vocab_map = np.full(20, -1)
    vocab_map[[1, 2]] = [1, 2]
    out = _transfer(src, [10, 11], [(0, 0), (1, 1)], vocab_map)
    np.testing.assert_array_equal(out.topk_ids[0], [11, PAD_ID])
    np.testing.assert_array_equal(out.topk_ids[1], [1, 2])


def test_source_text_differing_from_target_text_is_refused():
    src = _source([[1], [2]], [[-1.0], [-1.0]])
    with pytest.raises(FusebenchError, match="character 2.*same chunks"):
        transfer_distributions(src, np.array([1, 2]), np.array([(0, 0), (1, 1)]), IDENTITY,
                               source_text="abc", target_text="abd")


@pytest.mark.parametrize("pairs", [[(0, 0), (1, 1)], [(0, 0), (2, 1), (2, 2)], [(0, 0), (1, 1), (1, 1), (2, 2)]])
def test_paths_that_do_not_cover_both_sequences_monotonically_are_refused(pairs):
    src = _source([[1], [2], [3]], np.full((3, 1), -1.0))
    with pytest.raises(FusebenchError, match="alignment path"):
        _transfer(src, [1, 2, 3], pairs, IDENTITY)


def test_merge_duplicate_ids_sorts_by_probability_and_pads():
    ids, lp = merge_duplicate_ids(np.array([[5, 3, 5, -1], [2, 2, 2, 2]]),
                                  np.array([[-2.0, -1.0, -2.0, -0.1], [-1.0, -1.0, -1.0, -1.0]]))
    np.testing.assert_array_equal(ids, [[3, 5], [2, PAD_ID]])  # p(5) = 2 e^-2 < p(3) = e^-1
    np.testing.assert_allclose(lp, [[-1.0, -2.0 + np.log(2)], [-1.0 + np.log(4), NEG]], rtol=1e-6)


def test_real_tokenizers_transfer_only_where_token_ends_coincide(bpe_tokenizer_dir, unigram_tokenizer_dir,
                                                                  stdlib_texts):
    """Unigram (▁) source -> byte-level BPE (Ġ) target on real text, aligned by character spans."""
    from transformers import AutoTokenizer

    src_tok = AutoTokenizer.from_pretrained(str(unigram_tokenizer_dir))
    tgt_tok = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    text = stdlib_texts[0][:400]
    s = src_tok(text, return_offsets_mapping=True, add_special_tokens=False)
    t = tgt_tok(text, return_offsets_mapping=True, add_special_tokens=False)
    s_end = np.array([e for _, e in s.offset_mapping])
    t_end = np.array([e for _, e in t.offset_mapping])
    pairs = np.array([(i, j) for i, (a, b) in enumerate(s.offset_mapping) for j, (c, d) in enumerate(t.offset_mapping)
                      if a < d and c < b], dtype=np.int32)  # character spans overlap
    # vocab map by exact surface string
    tgt_vocab = {tgt_tok.convert_tokens_to_string([tok]): i for tok, i in tgt_tok.get_vocab().items()}
    vocab_map = np.full(len(src_tok), -1, dtype=np.int32)
    for tok, i in src_tok.get_vocab().items():
        vocab_map[i] = tgt_vocab.get(tok.replace("▁", " "), -1)
    n_src = len(s.input_ids)
    rng = np.random.default_rng(0)
    src = SequenceDistributions(np.array(s.input_ids), rng.integers(0, len(src_tok), (n_src, 5)),
                                np.sort(rng.normal(-3, 1, (n_src, 5)).astype(np.float32))[:, ::-1].copy(),
                                np.zeros(n_src - 1, np.float32), 2.0)
    out = transfer_distributions(src, np.array(t.input_ids), pairs, vocab_map, source_text=src_tok.decode(s.input_ids),
                                 target_text=tgt_tok.decode(t.input_ids))
    got = out.source_index >= 0
    assert 0.3 < got.mean() < 1.0  # most positions transfer; some (1:n insides, unmapped) fall back
    assert (s_end[out.source_index[got]] == t_end[got]).all()  # both predict what follows the same character
    fell = np.flatnonzero(~got[:-1])
    np.testing.assert_array_equal(out.topk_ids[fell, 0], np.array(t.input_ids)[fell + 1])
