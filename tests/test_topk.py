"""The extraction's CPU top-k and logsumexp (fusebench/extract/topk.py) against torch: same values and ids, a stated
tie rule, a logsumexp as accurate as torch's float32 one."""

from __future__ import annotations

import pytest
import torch

from fusebench.extract import topk


def _check(x: torch.Tensor, k: int) -> None:
    v, i, lse = topk.topk_logsumexp(x, k)
    ref = torch.topk(x, k, dim=-1)
    assert torch.equal(v, ref.values)                                         # the same values, in order
    assert torch.equal(x.gather(-1, i), v)                                    # ids that hold those values
    distinct = (ref.values[:, 1:] != ref.values[:, :-1]).all(-1)
    assert torch.equal(i[distinct], ref.indices[distinct])                    # without ties, torch's very ids
    exact = torch.logsumexp(x.double(), -1, keepdim=True)
    ours, torchs = (lse.double() - exact).abs(), (torch.logsumexp(x, -1, keepdim=True).double() - exact).abs()
    assert float(ours.max()) <= max(4 * float(torchs.max()), 1e-6)            # as accurate as torch in float32


@pytest.mark.parametrize("vocab", [2560, 4096, 4099, 50277])
def test_blocked_top_k_equals_torch_topk(vocab):
    g = torch.Generator().manual_seed(vocab)
    _check(torch.randn(300, vocab, generator=g) * 3, 10)
    _check(torch.randn(100, vocab, generator=g) * 30, 10)                     # wide logits: terms underflow
    # a trained LM's shape: a few large logits in a long flat tail, some rows sorted against the scan order
    x = torch.randn(200, vocab, generator=g)
    x[:, torch.randint(0, vocab, (20,), generator=g)] += 12
    x[:50] = torch.linspace(-5, 5, vocab)
    _check(x, 10)
    _check(x, 1)


def test_ties_at_the_kth_place_keep_the_lowest_ids_and_equal_values_sort_by_id():
    x = torch.zeros(3, 4096)
    x[0, [4000, 7, 900]] = 2.0          # three tied maxima, then 4093 tied zeros for the other 7 slots
    x[1] = torch.randint(0, 3, (4096,), generator=torch.Generator().manual_seed(0)).float()
    x[2, :] = float("-inf")
    x[2, 4095] = 0.0
    v, i, lse = topk.topk_logsumexp(x, 10)
    assert lse[2, 0] == 0 and float(lse[0, 0]) == pytest.approx(float(torch.logsumexp(x[0], 0)), abs=1e-6)
    assert i[0].tolist() == [7, 900, 4000, 0, 1, 2, 3, 4, 5, 6]
    twos = (x[1] == 2).nonzero()[:, 0]
    assert i[1].tolist() == twos[:10].tolist() and v[1].tolist() == [2.0] * 10
    assert i[2, 0] == 4095 and v[2, 0] == 0 and torch.isinf(v[2, 1:]).all()


def test_small_vocabularies_use_torch_topk():
    assert not topk.usable(2559, 10) and topk.usable(2560, 10)


def test_extraction_on_a_4096_piece_model_uses_it_and_matches_log_softmax(tmp_path):
    """A real (random) GPT-NeoX with a 4096-row head, as the benchmark's: the store's ids are torch's top-k of the
    log-softmax wherever no tie decides."""
    import numpy as np

    from fusebench.extract.extract import hf_compute
    from fusebench.models.build import ModelSize, build_model

    model = build_model("gpt_neox", 4096, ModelSize(hidden=64, layers=2, heads=2), 1, 2, seed=0).eval()
    assert topk.usable(model.config.vocab_size, 10)
    seqs = [list(range(5, 70)), list(range(300, 331))]
    got = hf_compute(model, 10, batch_size=2)(seqs)
    for s, d in zip(seqs, got):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([s])).logits[0].float(), -1)
        ref = torch.topk(lp, 10, -1)
        np.testing.assert_array_equal(d.topk_ids, ref.indices.numpy())
        np.testing.assert_allclose(d.topk_logprobs, ref.values.numpy(), atol=1e-5)
