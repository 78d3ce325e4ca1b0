"""The aligned store is as compact as a distribution store (issue 21 item 7: a 151,936-id target's aligned stores
measured 60.7 B/token): bit-packed ids with an empty-slot code, companded log-probs; empty slots and sources cut
short survive the round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusebench.align.corpus import FORMAT_VERSION, AlignedStore, _write_shard
from fusebench.align.transfer import AlignedDistributions
from fusebench.extract.packing import Layout


def _row(rng, n: int, vocab: int, k: int) -> AlignedDistributions:
    lp = np.sort(np.log(rng.dirichlet(np.full(k, 0.3), size=n)).astype(np.float32), axis=1)[:, ::-1]
    ids = rng.choice(vocab, size=(n, k), replace=False) if n * k < vocab else rng.integers(0, vocab, (n, k))
    ids[:, 0] = vocab - 1  # the largest real id is not the empty code
    ids[::3, 7:], lp[::3, 7:] = -1, -np.inf  # some positions received fewer than k entries
    ids[5], lp[5] = -1, -np.inf              # one received none
    return AlignedDistributions(np.arange(n), ids.astype(np.int64), np.ascontiguousarray(lp), 2.5,
                                np.zeros(n, np.int32), n - 1)


@pytest.mark.parametrize("vocab", [32_000, 151_936])
def test_aligned_rows_round_trip_in_at_most_32_bytes_per_token(tmp_path, vocab):
    rng = np.random.default_rng(0)
    rows = [_row(rng, 40, vocab, 10), None, _row(rng, 25, vocab, 10)]  # None: the source was cut short there
    lengths = [40, 30, 25]
    _write_shard(tmp_path, 0, rows, Layout.of(vocab + 1, 10), lengths)
    (tmp_path / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "num_sequences": 3,
                                                    "id_space": vocab + 1, "top_k": 10}))
    store = AlignedStore(tmp_path)
    shard = tmp_path / "shard-00000"
    per_token = sum(np.load(shard / f"{n}.npy").nbytes for n in ("ids", "logprobs")) / sum(lengths)
    assert per_token <= 32
    for i, row in ((0, rows[0]), (2, rows[2])):
        got = store.sequence(i)
        np.testing.assert_array_equal(got.ids, row.topk_ids)  # already in descending order: kept as they are
        assert np.array_equal(np.isinf(got.logprobs), np.isinf(row.topk_logprobs))
        finite = np.isfinite(row.topk_logprobs)
        assert np.abs(got.logprobs[finite] - row.topk_logprobs[finite]).max() < 0.2
        assert got.ce == 2.5 and got.num_predicted == row.num_predicted
    cut = store.sequence(1)
    assert cut.ids.shape == (30, 10) and (cut.ids == -1).all() and np.isneginf(cut.logprobs).all()
    assert np.isinf(cut.ce)


def test_an_older_aligned_store_is_refused_saying_so(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"format_version": 2, "num_sequences": 1}))
    from fusebench.errors import FusebenchError

    with pytest.raises(FusebenchError, match="aligned-store format.*2.*reads 3.*rerun the align stage"):
        AlignedStore(tmp_path)
