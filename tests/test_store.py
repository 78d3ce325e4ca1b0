"""The distribution store: ids exact, log-probs within stated bounds, <= 32 bytes per token at k = 10, and loud failures on damaged stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusebench.errors import FusebenchError
from fusebench.extract.packing import GAP_BITS, GAP_RANGE, GOLD_RANGE, TOP_RANGE, Layout
from fusebench.extract.store import (DistributionStore, SequenceDistributions, StoreWriter, bytes_per_token,
                                     gold_from_topk, id_dtype, shard_name)


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


def _companding_error(nats: np.ndarray, span: float, bits: int) -> np.ndarray:
    """The largest error sqrt companding over [0, span) with `bits` bits makes at each value (half a step there)."""
    levels = (1 << bits) - 1
    return np.sqrt(span * np.clip(nats, 0, span)) / levels + span / levels ** 2


def test_round_trip_recovers_ids_exactly_and_logprobs_within_the_companding_bounds(tmp_path, data):
    store = _write(tmp_path / "s", data)
    originals = [s for shard in data for s in shard]
    assert store.num_sequences == 4 and store.top_k == 10 and store.vocab_size == 300
    for i, orig in enumerate(originals):
        got = store.sequence(i)
        np.testing.assert_array_equal(got.input_ids, orig.input_ids)
        np.testing.assert_array_equal(got.topk_ids, orig.topk_ids)
        top = -orig.topk_logprobs[:, :1]
        assert (np.abs(got.topk_logprobs[:, :1] + top) <= _companding_error(top, TOP_RANGE, 9) + 1e-6).all()
        # every other slot: its distance below the *stored* top, companded (so no second error is added)
        below_top = got.topk_logprobs[:, :1] - orig.topk_logprobs
        bound = _companding_error(below_top, GAP_RANGE, GAP_BITS)
        assert (np.abs(got.topk_logprobs - orig.topk_logprobs) <= bound + 1e-5)[:, 1:].all()
        assert got.sequence_ce == np.float32(orig.sequence_ce)  # stored exactly, not from quantised golds
        assert got.gold_logprobs.shape == (orig.length - 1,)


def test_gold_logprob_from_its_slot_in_topk_and_bounded_below_the_last_slot_outside(tmp_path, data):
    store = _write(tmp_path / "s", data)
    seen_in = seen_out = 0
    for i, orig in enumerate(s for shard in data for s in shard):
        got = store.sequence(i)
        in_topk, slot = gold_from_topk(orig.input_ids, orig.topk_ids)
        seen_in, seen_out = seen_in + in_topk.sum(), seen_out + (~in_topk).sum()
        rows = np.arange(orig.length - 1)
        np.testing.assert_array_equal(got.gold_logprobs[in_topk], got.topk_logprobs[rows, slot][in_topk])
        # outside: its distance below the last slot, companded in the id row's spare bits (8 at vocab 300, k 10)
        below = got.topk_logprobs[:-1, -1] - orig.gold_logprobs
        got_below = got.topk_logprobs[:-1, -1] - got.gold_logprobs
        bound = _companding_error(below, GOLD_RANGE, Layout.of(300, 10).gold_bits)
        assert (np.abs(got_below - below)[~in_topk] <= bound[~in_topk] + 1e-5).all()
    assert seen_in > 0 and seen_out > 0  # both code paths were exercised


def test_out_of_topk_gold_far_below_is_clipped(tmp_path):
    seq = SequenceDistributions(np.array([5, 7]), np.array([[1, 2], [3, 4]]), np.full((2, 2), -1.0, np.float32),
                                np.array([-100.0], np.float32), 100.0)
    w = StoreWriter(tmp_path / "s", "m", "t", 16, 2)
    w.write_shard(0, [seq])
    assert w.finalize().sequence(0).gold_logprobs[0] == pytest.approx(-1.0 - GOLD_RANGE, abs=0.02)


@pytest.mark.parametrize("vocab, k, most", [(300, 10, 25), (32_000, 10, 30), (65_536, 10, 30),
                                            (151_936, 10, 32), (1 << 18, 10, 32), (151_936, 4, 14)])
def test_store_costs_at_most_32_bytes_per_token_per_model_at_k10_up_to_2_18_ids(tmp_path, vocab, k, most):
    rng = np.random.default_rng(1)
    seqs = [_random_sequence(rng, 50, 300, k) for _ in range(3)]
    for s in seqs:  # the ids reach the top of the vocabulary: every bit is exercised
        s.topk_ids[:, 0] = vocab - 1 - s.topk_ids[:, 0]
        s.input_ids[0] = vocab - 1
    store = _write(tmp_path / "s", [seqs], vocab=vocab, k=k)
    folder = tmp_path / "s" / shard_name(0)
    topk = sum(np.load(folder / n, mmap_mode="r").nbytes for n in ("topk_ids.npy", "topk_nlp.npy"))
    tokens = store.num_tokens
    assert topk / tokens <= most
    input_ids = np.load(folder / "input_ids.npy", mmap_mode="r").nbytes
    assert (topk + input_ids) / tokens == bytes_per_token(vocab, k)  # what `fusebench plan` estimates with
    for i, orig in enumerate(seqs):
        np.testing.assert_array_equal(store.sequence(i).topk_ids, orig.topk_ids)
        np.testing.assert_array_equal(store.sequence(i).input_ids, orig.input_ids)


def _peaked_logits(rng, positions: int, vocab: int) -> np.ndarray:
    """Logits shaped like a real LM's: a noisy floor and one token standing 0-14 nat above it (top-1 p from ~0 to 1)."""
    logits = rng.normal(0, 2, size=(positions, vocab)).astype(np.float32)
    logits[np.arange(positions), rng.integers(0, vocab, positions)] += rng.uniform(0, 14, positions)
    return logits


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_fusion_loss_on_stored_distributions_is_within_1e_3_relative(tmp_path, temperature):
    import torch

    from fusebench.fuse.loss import fusion_loss

    rng = np.random.default_rng(2)
    vocab, k, t = 151_936, 10, 96
    lp = torch.log_softmax(torch.from_numpy(_peaked_logits(rng, t, vocab)), -1)
    top = torch.topk(lp, k, dim=-1)
    ids = rng.integers(0, vocab, t)
    seq = SequenceDistributions(ids, top.indices.numpy(), top.values.numpy(),
                                lp[np.arange(t - 1), ids[1:]].numpy(), 1.0)
    got = _write(tmp_path / "s", [[seq]], vocab=vocab, k=k).sequence(0)
    student = (lp + torch.from_numpy(rng.normal(0, 1, size=(t, vocab)).astype(np.float32)))[None]
    mask = torch.ones(1, t, dtype=torch.bool)
    exact = fusion_loss(student, top.indices[None], top.values[None], mask, temperature)
    stored = fusion_loss(student, torch.from_numpy(got.topk_ids)[None], torch.from_numpy(got.topk_logprobs)[None],
                         mask, temperature)
    assert abs(float(stored) / float(exact) - 1) <= 1e-3


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
    meta["format_version"] = 1  # a store of fusebench before bit-packing: said so, not misread
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FusebenchError, match="format version 1, but this fusebench reads version 2 .*packs ids.*Delete"):
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
