"""The distribution store: exact round trip, 40 bytes per token at k = 10, and loud failures on damaged stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusebench.errors import FusebenchError
from fusebench.extract.store import (GOLD_STEP, DistributionStore, SequenceDistributions, StoreWriter, id_dtype,
                                     shard_name)


def _random_sequence(rng, length: int, vocab: int, k: int) -> SequenceDistributions:
    """A plausible sequence: random log-softmax rows, gold sometimes inside the top-k and sometimes far outside."""
    logits = rng.normal(0, 3, size=(length, vocab)).astype(np.float32)
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ids = rng.integers(0, vocab, size=length)
    top = np.argsort(-lp, axis=1, kind="stable")[:, :k]
    gold = lp[np.arange(length - 1), ids[1:]]
    return SequenceDistributions(ids.astype(np.int64), top.astype(np.int64),
                                 np.take_along_axis(lp, top, 1), gold.astype(np.float32),
                                 float(-gold.astype(np.float64).mean()))


def _write(path, seqs_per_shard, vocab=300, k=10):
    w = StoreWriter(path, "model-fp", "tok-fp", vocab, k)
    for i, seqs in enumerate(seqs_per_shard):
        w.write_shard(i, seqs)
    return w.finalize()


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return [[_random_sequence(rng, n, 300, 10) for n in (40, 2, 17)], [_random_sequence(rng, 33, 300, 10)]]


def test_round_trip_recovers_ids_exactly_and_logprobs_within_fp16(tmp_path, data):
    store = _write(tmp_path / "s", data)
    originals = [s for shard in data for s in shard]
    assert store.num_sequences == 4 and store.top_k == 10 and store.vocab_size == 300
    for i, orig in enumerate(originals):
        got = store.sequence(i)
        np.testing.assert_array_equal(got.input_ids, orig.input_ids)
        np.testing.assert_array_equal(got.topk_ids, orig.topk_ids)
        np.testing.assert_allclose(got.topk_logprobs, orig.topk_logprobs, rtol=2 ** -11, atol=1e-7)
        assert got.sequence_ce == np.float32(orig.sequence_ce)  # stored exactly, not from quantised golds
        assert got.gold_logprobs.shape == (orig.length - 1,)


def test_gold_logprob_exact_in_topk_and_within_a_32nd_nat_outside(tmp_path, data):
    store = _write(tmp_path / "s", data)
    seen_in = seen_out = 0
    for i, orig in enumerate(s for shard in data for s in shard):
        got = store.sequence(i)
        in_topk = (orig.topk_ids[:-1] == orig.input_ids[1:, None]).any(axis=1)
        seen_in, seen_out = seen_in + in_topk.sum(), seen_out + (~in_topk).sum()
        # inside the top-k: the same fp16 value as the matching slot
        np.testing.assert_allclose(got.gold_logprobs[in_topk], orig.gold_logprobs[in_topk], rtol=2 ** -11)
        assert np.abs(got.gold_logprobs[~in_topk] - orig.gold_logprobs[~in_topk]).max(initial=0) <= GOLD_STEP / 2
    assert seen_in > 0 and seen_out > 0  # both code paths were exercised


def test_out_of_topk_gold_beyond_64_nats_is_clipped(tmp_path):
    seq = SequenceDistributions(np.array([5, 7]), np.array([[1, 2], [3, 4]]), np.full((2, 2), -1.0, np.float32),
                                np.array([-100.0], np.float32), 100.0)
    w = StoreWriter(tmp_path / "s", "m", "t", 16, 2)  # k = 2: only 2 spare bits, range [0, 4) nat
    w.write_shard(0, [seq])
    assert w.finalize().sequence(0).gold_logprobs[0] == pytest.approx(-3 * GOLD_STEP)
    seq10 = SequenceDistributions(np.array([5, 7]), np.tile(np.arange(10, 20), (2, 1)),
                                  np.full((2, 10), -1.0, np.float32), np.array([-100.0], np.float32), 100.0)
    w = StoreWriter(tmp_path / "s10", "m", "t", 32, 10)
    w.write_shard(0, [seq10])
    assert w.finalize().sequence(0).gold_logprobs[0] == pytest.approx(-1023 * GOLD_STEP)


def test_store_costs_40_bytes_per_token_per_model_at_k10(tmp_path, data):
    store = _write(tmp_path / "s", data)
    tokens = store.num_tokens
    folder = tmp_path / "s" / shard_name(0)
    arrays = [np.load(folder / n, mmap_mode="r") for n in ("topk_ids.npy", "topk_nlp.npy")]
    assert sum(a.nbytes for a in arrays) == 40 * sum(s.length for s in data[0])
    sizes = store.nbytes()
    per_token = sizes["distributions"] / tokens
    # 40 B of top-k + 4 B per sequence of CE + two 128-byte .npy headers per shard, amortised
    assert 40 <= per_token <= 40 + (4 * 4 + 3 * 128 * 2) / tokens
    # 2 B of ids per token (vocab <= 65536) + sequence offsets (8 B each) + .npy headers
    assert sizes["tokenized_corpus"] == 2 * tokens + 8 * (4 + 2) + 4 * 128


def test_id_dtype_is_the_smallest_that_holds_the_vocab():
    assert id_dtype(256) == np.uint8
    assert id_dtype(257) == np.uint16
    assert id_dtype(65536) == np.uint16
    assert id_dtype(65537) == np.uint32


def test_shards_are_memory_mapped(tmp_path, data):
    store = _write(tmp_path / "s", data)
    store.sequence(3)
    assert isinstance(store._shard(1)["topk_nlp.npy"], np.memmap)


def test_verify_names_a_corrupted_file(tmp_path, data):
    store = _write(tmp_path / "s", data)
    store.verify()
    f = tmp_path / "s" / shard_name(1) / "topk_ids.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(FusebenchError, match=r"topk_ids\.npy.*Delete"):
        DistributionStore.open(tmp_path / "s").verify()


def test_truncated_shard_is_refused_on_open(tmp_path, data):
    _write(tmp_path / "s", data)
    f = tmp_path / "s" / shard_name(0) / "topk_nlp.npy"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(FusebenchError, match=r"topk_nlp\.npy.*truncated.*Delete"):
        DistributionStore.open(tmp_path / "s")


def test_other_format_version_is_refused(tmp_path, data):
    _write(tmp_path / "s", data)
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    meta["format_version"] = 0
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FusebenchError, match="format version 0.*Delete"):
        DistributionStore.open(tmp_path / "s")


def test_unfinished_store_is_refused(tmp_path, data):
    w = StoreWriter(tmp_path / "s", "m", "t", 300, 10)
    w.write_shard(0, data[0])
    with pytest.raises(FusebenchError, match="no meta.json"):
        DistributionStore.open(tmp_path / "s")
    with pytest.raises(FusebenchError, match=r"shards \[1\] are missing"):
        w.finalize(num_shards=2)


def test_writer_refuses_a_directory_from_another_extraction(tmp_path, data):
    _write(tmp_path / "s", data)
    with pytest.raises(FusebenchError, match="top_k.*Delete"):
        StoreWriter(tmp_path / "s", "model-fp", "tok-fp", 300, 5)
    with pytest.raises(FusebenchError, match="model_fingerprint"):
        StoreWriter(tmp_path / "s", "another-model", "tok-fp", 300, 10)


def test_single_token_sequence_is_refused(tmp_path):
    seq = SequenceDistributions(np.array([1]), np.array([[1, 2]]), np.zeros((1, 2), np.float32),
                                np.zeros(0, np.float32), 0.0)
    with pytest.raises(FusebenchError, match="at least 2 tokens"):
        StoreWriter(tmp_path / "s", "m", "t", 16, 2).write_shard(0, [seq])
