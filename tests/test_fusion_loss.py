"""The sparse fusion loss equals the dense formula, and reduces to the plain CLM loss of a real model."""

from __future__ import annotations

import pytest
import torch

from fusebench.errors import FusebenchError
from fusebench.fuse.loss import combined_loss, fusion_loss


def _dense(logits, ids, lp, mask, t):
    """The definition with a dense [B, T, V] teacher: -sum_v p(v) log_softmax(z / t)(v)."""
    p = torch.zeros_like(logits)
    pk = torch.softmax(lp / t, dim=-1).nan_to_num(0.0)
    p.scatter_add_(2, ids.clamp(min=0), pk.to(p.dtype))
    counted = mask.bool() & torch.isfinite(lp).any(-1)
    per = -(p * torch.log_softmax(logits / t, dim=-1)).sum(-1)
    return (per * counted).sum() / counted.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_loss_and_gradient_equal_the_dense_formula(temperature):
    torch.manual_seed(0)
    b, t, v, k = 2, 6, 13, 4
    logits = torch.randn(b, t + 1, v, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, v, (b, t, k))
    lp = torch.log_softmax(torch.randn(b, t, k, dtype=torch.float64), -1)
    ids[0, 1, 2:], lp[0, 1, 2:] = -1, -torch.inf    # padding slots
    ids[1, 3, 1], lp[1, 3, 1] = ids[1, 3, 0], -0.5  # a repeated id in two slots
    lp[1, 2] = -torch.inf                            # a position with no target at all
    mask = torch.ones(b, t)
    mask[1, 5] = 0
    sparse = fusion_loss(logits[:, :-1], ids, lp, mask, temperature)  # a strided view, as the train loop passes
    dense = _dense(logits[:, :-1], ids, lp, mask, temperature)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-9)
    g_sparse, = torch.autograd.grad(sparse, logits)
    g_dense, = torch.autograd.grad(dense, logits)
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-7, atol=1e-10)


def test_reductions_count_only_positions_with_targets():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 5)
    ids = torch.tensor([[[1, 2], [0, 4], [3, 3]]])
    lp = torch.tensor([[[-0.1, -2.0], [-torch.inf, -torch.inf], [-1.0, -1.0]]])
    mask = torch.ones(1, 3)
    per = fusion_loss(logits, ids, lp, mask, reduction="none")
    assert per[0, 1] == 0
    assert fusion_loss(logits, ids, lp, mask, reduction="sum").item() == pytest.approx(per.sum().item())
    assert fusion_loss(logits, ids, lp, mask).item() == pytest.approx(per.sum().item() / 2)


def test_one_hot_next_token_targets_give_the_clm_loss_of_a_real_model(tiny_neox_dir, stdlib_texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_neox_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_neox_dir))
    ids = torch.tensor([tok(stdlib_texts[1])["input_ids"][:40]])
    out = model(ids, labels=ids)
    # the fallback target of every position: a one-hot of the next token
    t_ids = torch.stack([ids[:, 1:], torch.full_like(ids[:, 1:], -1)], dim=-1)
    t_lp = torch.zeros(t_ids.shape)
    t_lp[..., 1] = -torch.inf
    fus = fusion_loss(out.logits[:, :-1], t_ids, t_lp, torch.ones(1, 39))
    assert fus.item() == pytest.approx(out.loss.item(), rel=1e-5)
    # λ = 1 is exactly the CLM loss, even when the fusion term is not finite
    assert combined_loss(out.loss, torch.tensor(float("nan")), 1.0) is out.loss
    mixed = combined_loss(out.loss, fus * 2, 0.9)
    assert mixed.item() == pytest.approx(out.loss.item() * 1.1, rel=1e-5)
    mixed.backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_bf16_logits_get_bf16_gradients():
    logits = torch.randn(1, 4, 7, dtype=torch.bfloat16, requires_grad=True)
    loss = fusion_loss(logits, torch.zeros(1, 4, 1, dtype=torch.long), torch.zeros(1, 4, 1), torch.ones(1, 4))
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16


def test_bad_arguments_are_explained():
    logits = torch.zeros(1, 2, 3)
    with pytest.raises(FusebenchError, match="temperature"):
        fusion_loss(logits, torch.zeros(1, 2, 1, dtype=torch.long), torch.zeros(1, 2, 1), torch.ones(1, 2), 0.0)
    with pytest.raises(FusebenchError, match="do not match"):
        fusion_loss(logits, torch.zeros(1, 3, 1, dtype=torch.long), torch.zeros(1, 3, 1), torch.ones(1, 3))
    with pytest.raises(FusebenchError, match="λ"):
        combined_loss(torch.tensor(1.0), torch.tensor(1.0), 1.5)


def test_clm_and_fusion_in_one_pass_equal_the_two_terms_built_apart():
    """The training step's fused kernel (one logsumexp, one gradient buffer) against cross_entropy + fusion_loss."""
    from fusebench.fuse.loss import clm_and_fusion_terms, fusion_loss

    torch.manual_seed(0)
    b, t, v, k = 3, 17, 101, 4
    logits = torch.randn(b, t, v, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, v, (b, t))
    mask = torch.ones(b, t)
    mask[1, 12:] = 0                                            # right padding
    t_ids = torch.randint(0, v, (b, t, k))
    t_lp = torch.log_softmax(torch.randn(b, t, k, dtype=torch.float64), -1)
    t_lp[0, 3] = -float("inf")                                  # a position without teacher slots
    t_ids[2, 5, 1] = -1                                         # a padding slot
    t_lp[2, 5, 1] = -float("inf")
    pred = torch.nn.functional.pad(mask[:, 1:] * mask[:, :-1], (0, 1))
    next_ids = torch.nn.functional.pad(ids[:, 1:], (0, 1))
    clm, fus = clm_and_fusion_terms(logits, next_ids, pred, t_ids, t_lp, pred)
    ref_clm = torch.nn.functional.cross_entropy(logits.transpose(1, 2), next_ids, reduction="none") * pred
    ref_fus = fusion_loss(logits, t_ids, t_lp, pred, reduction="none")
    torch.testing.assert_close(clm, ref_clm)
    torch.testing.assert_close(fus, ref_fus)
    grad = torch.autograd.grad(0.9 * clm.sum() + 0.1 * fus.sum(), logits)[0]
    ref = torch.autograd.grad(0.9 * ref_clm.sum() + 0.1 * ref_fus.sum(), logits)[0]
    torch.testing.assert_close(grad, ref)
    assert torch.autograd.gradcheck(
        lambda z: sum(x.sum() for x in clm_and_fusion_terms(z, next_ids, pred, t_ids, t_lp, pred)), (logits,))
