"""Extraction with a real tiny GPT-NeoX: what each position holds, padding invariance, resuming, sharding."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from fusebench.errors import FusebenchError
from fusebench.extract.extract import (corpus_fingerprint, extract_distributions, hf_compute, load_model,
                                       model_fingerprint, run_shards, tokenizer_fingerprint)
from fusebench.extract.store import DistributionStore, StoreWriter, shard_name


@pytest.fixture(scope="module")
def sequences(tiny_neox_dir, stdlib_texts) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_neox_dir))
    # varied lengths so batches really pad
    return [tok(t)["input_ids"][:n] for t, n in zip(stdlib_texts[:10], (48, 9, 33, 64, 2, 17, 40, 25, 56, 12))]


@pytest.fixture(scope="module")
def store(tiny_neox_dir, sequences, tmp_path_factory) -> DistributionStore:
    return extract_distributions(tiny_neox_dir, sequences, tmp_path_factory.mktemp("x") / "store", top_k=10,
                                 batch_size=4, shard_size=4, progress=False)


def test_position_t_holds_the_distribution_predicting_token_t_plus_1(tiny_neox_dir, sequences, store):
    model = load_model(tiny_neox_dir, "cpu")
    for i in (0, 3):
        ids = torch.tensor([sequences[i]])
        with torch.no_grad():
            out = model(ids, labels=ids)
        lp = torch.log_softmax(out.logits[0].float(), dim=-1)
        got = store.sequence(i)
        top = torch.topk(lp, 10, dim=-1)
        np.testing.assert_array_equal(got.topk_ids, top.indices.numpy())
        # log-probs companded in 7-9 bits (store.py states the bounds; tests/test_store.py checks them exactly)
        np.testing.assert_allclose(got.topk_logprobs, top.values.numpy(), rtol=0.03, atol=0.02)
        gold = lp[:-1].gather(-1, ids[0, 1:, None])[:, 0].numpy()
        assert np.abs(got.gold_logprobs - gold).max() <= 1.0  # out of the top-k: a coarse diagnostic
        # the per-sequence CE is exactly the model's own CLM loss on the sequence
        assert got.sequence_ce == pytest.approx(float(out.loss), abs=1e-5)


def test_right_padding_does_not_change_a_sequence(tiny_neox_dir, sequences, store):
    model = load_model(tiny_neox_dir, "cpu")
    alone = hf_compute(model, 10, batch_size=1)([sequences[1]])[0]
    batched = store.sequence(1)  # extracted next to a 64-token sequence
    np.testing.assert_array_equal(alone.topk_ids, batched.topk_ids)
    np.testing.assert_allclose(alone.topk_logprobs, batched.topk_logprobs, rtol=0.03, atol=0.02)  # companded


def test_finished_store_is_returned_and_a_different_k_is_refused(tiny_neox_dir, sequences, store):
    again = extract_distributions(tiny_neox_dir, sequences, store.path, top_k=10, shard_size=4, progress=False)
    assert again.meta["shards"] == store.meta["shards"]
    with pytest.raises(FusebenchError, match="top_k.*Delete"):
        extract_distributions(tiny_neox_dir, sequences, store.path, top_k=5, shard_size=4, progress=False)


def _digest(path) -> dict[str, str]:
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*.npy"))}


def test_crash_resumes_at_the_missing_shard_and_gives_the_same_store(tiny_neox_dir, sequences, store, tmp_path):
    partial = tmp_path / "store"
    shutil.copytree(store.path, partial)
    (partial / "meta.json").unlink()
    shutil.rmtree(partial / shard_name(1))
    (partial / ".shard-00001.tmp-999").mkdir()  # a half-written shard left by the crash
    kept = (partial / shard_name(0) / "topk_ids.npy").stat().st_mtime_ns
    resumed = extract_distributions(tiny_neox_dir, sequences, partial, top_k=10, batch_size=4, shard_size=4,
                                    progress=False)
    assert (partial / shard_name(0) / "topk_ids.npy").stat().st_mtime_ns == kept  # not recomputed
    assert _digest(partial) == _digest(store.path)
    resumed.verify()


def test_shards_split_over_processes_give_the_single_process_store(tiny_neox_dir, sequences, store, tmp_path):
    # what `accelerate launch` with 2 processes does: rank r writes shards r, r+2, ...; rank 0 finalises
    model = load_model(tiny_neox_dir, "cpu")
    writers = [StoreWriter(tmp_path / "s", model_fingerprint(tiny_neox_dir), tokenizer_fingerprint(tiny_neox_dir),
                           store.vocab_size, 10, corpus_fingerprint(sequences), num_shards=3) for _ in range(2)]
    for rank in (1, 0):
        run_shards(hf_compute(model, 10, 4), sequences, writers[rank], list(range(rank, 3, 2)), 4, progress=False)
    split = writers[0].finalize()
    assert _digest(split.path) == _digest(store.path)
    assert split.meta["shards"] == store.meta["shards"]


def test_store_holds_every_token_once(sequences, store):
    assert store.num_sequences == len(sequences)
    assert store.num_tokens == sum(len(s) for s in sequences)
    assert [store.sequence(i).input_ids.tolist() for i in range(len(sequences))] == sequences


def test_empty_corpus_and_unknown_backend_are_refused(tiny_neox_dir, tmp_path):
    with pytest.raises(FusebenchError, match="no sequences"):
        extract_distributions(tiny_neox_dir, [], tmp_path / "s")
    with pytest.raises(FusebenchError, match="backend"):
        extract_distributions(tiny_neox_dir, [[1, 2]], tmp_path / "s", backend="onnx")
