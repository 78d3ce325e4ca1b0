"""The sparse fusion loss: cross-entropy of the student against fused top-k targets, without a dense teacher.

For each position with teacher slots (ids k_1..k_K, log-probs l_1..l_K):

    p_k   = softmax_k(l_k / T)                  the teacher, renormalised over its K slots (-inf slots get 0)
    loss  = -sum_k p_k log_softmax(z / T)[k]    z = the student's logits
          = logsumexp(z / T) - sum_k p_k z[k] / T      (sum_k p_k = 1)

The second form needs one logsumexp over the vocabulary and a gather of K logits, so no [B, T, V] teacher tensor
exists, and no [B, T, V] log-softmax either. A custom autograd function keeps backward lean as well: the gradient
(softmax(z / T) - scatter(p)) / T is written straight into one [B, T, V] buffer, chunk by chunk, where plain autograd
would build several full-size temporaries (exp, scatter zeros, their sum). Positions outside `mask`, and positions
whose slots are all empty (-inf), contribute nothing and are not counted.
"""

from __future__ import annotations

import torch

from fusebench.errors import FusebenchError

_CHUNK_ELEMENTS = 1 << 24  # rows x vocab processed at once in float32 (64 MiB)


def teacher_probs(target_logprobs: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax over the K slots of target_logprobs / T, and whether each position has any slot at all."""
    lp = target_logprobs.to(torch.promote_types(target_logprobs.dtype, torch.float32)) / temperature
    has_slot = torch.isfinite(lp).any(dim=-1)
    top = torch.where(has_slot, lp.amax(dim=-1), torch.zeros_like(lp[..., 0]))
    e = torch.exp(lp - top.unsqueeze(-1))  # exp(-inf) = 0 for empty slots
    return e / e.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny), has_slot


def _row_chunks(logits: torch.Tensor):
    """(batch row, slice of positions) pieces of about _CHUNK_ELEMENTS; views, so strided logits are not copied."""
    b, t, vocab = logits.shape
    rows = max(1, _CHUNK_ELEMENTS // vocab)
    for bi in range(b):
        for lo in range(0, t, rows):
            yield bi, slice(lo, min(t, lo + rows))


class _SparseCrossEntropy(torch.autograd.Function):
    """Per-position loss logsumexp(z/T) - sum_k w_k z[id_k]/T for z [B, T, V], weights w [B, T, K] (sum 1 or 0)."""

    @staticmethod
    def forward(ctx, logits, ids, weights, temperature):
        acc = torch.promote_types(logits.dtype, torch.float32)  # at least float32, whatever the logits' dtype
        lse = torch.empty(logits.shape[:2], dtype=acc, device=logits.device)
        for bi, pos in _row_chunks(logits):
            lse[bi, pos] = torch.logsumexp(logits[bi, pos].to(acc) / temperature, dim=-1)
        gathered = logits.gather(2, ids).to(acc) / temperature
        weights = weights.to(acc)
        has_weight = weights.sum(dim=2)  # 1 where the position has a teacher, 0 where not
        ctx.save_for_backward(logits, ids, weights, lse, has_weight)
        ctx.temperature = temperature
        return lse * has_weight - (weights * gathered).sum(dim=2)

    @staticmethod
    def backward(ctx, grad_out):
        logits, ids, weights, lse, has_weight = ctx.saved_tensors
        t = ctx.temperature
        scale = grad_out.to(lse.dtype) / t
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for bi, pos in _row_chunks(logits):
            g = torch.exp(logits[bi, pos].to(lse.dtype) / t - lse[bi, pos, None])
            g.mul_((scale[bi, pos] * has_weight[bi, pos])[:, None])
            g.scatter_add_(1, ids[bi, pos], -(weights[bi, pos] * scale[bi, pos, None]))
            grad[bi, pos] = g
        return grad, None, None, None


def _logsumexp_rows(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim as max + log(sum(exp(x - max))): on CPU ~3x faster than torch.logsumexp."""
    top = x.amax(dim=-1, keepdim=True)
    return (top + torch.sub(x, top).exp_().sum(dim=-1, keepdim=True).log_())[..., 0]


class _ClmAndSparseCrossEntropy(torch.autograd.Function):
    """Both terms of a training step from one logsumexp and one gradient buffer (student temperature 1):
    clm = (lse(z) - z[gold]) * clm_mask and fusion = lse(z) * has_weight - sum_k w_k z[id_k], per position.

    Built separately, the CLM cross-entropy and the fusion term would each take a pass over [B, T, V] forward and
    backward, and autograd would add their two [B, T, V] gradients; here the gradient
    softmax(z) * (g_clm * clm_mask + g_fus * has_weight) - scatter(g_clm at gold) - scatter(g_fus * w) is written once."""

    @staticmethod
    def forward(ctx, logits, gold, clm_mask, ids, weights):
        acc = torch.promote_types(logits.dtype, torch.float32)
        lse = torch.empty(logits.shape[:2], dtype=acc, device=logits.device)
        for bi, pos in _row_chunks(logits):
            lse[bi, pos] = _logsumexp_rows(logits[bi, pos].to(acc))
        weights, clm_mask = weights.to(acc), clm_mask.to(acc)
        has_weight = weights.sum(dim=2)
        clm = (lse - logits.gather(2, gold.unsqueeze(-1))[..., 0].to(acc)) * clm_mask
        fusion = lse * has_weight - (weights * logits.gather(2, ids).to(acc)).sum(dim=2)
        ctx.save_for_backward(logits, gold, clm_mask, ids, weights, lse, has_weight)
        return clm, fusion

    @staticmethod
    def backward(ctx, g_clm, g_fus):
        logits, gold, clm_mask, ids, weights, lse, has_weight = ctx.saved_tensors
        g_clm, g_fus = g_clm.to(lse.dtype) * clm_mask, g_fus.to(lse.dtype)
        coef = g_clm + g_fus * has_weight
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for bi, pos in _row_chunks(logits):
            g = torch.sub(logits[bi, pos].to(lse.dtype), lse[bi, pos, None]).exp_()
            g.mul_(coef[bi, pos, None])
            g.scatter_add_(1, gold[bi, pos, None], -g_clm[bi, pos, None])
            g.scatter_add_(1, ids[bi, pos], -(weights[bi, pos] * g_fus[bi, pos, None]))
            grad[bi, pos] = g
        return grad, None, None, None, None


def clm_and_fusion_terms(student_logits: torch.Tensor, next_ids: torch.Tensor, clm_mask: torch.Tensor,
                         target_ids: torch.Tensor, target_logprobs: torch.Tensor,
                         mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position CLM cross-entropy (next_ids [B, T] on clm_mask) and fusion cross-entropy (as `fusion_loss`,
    reduction "none", temperature 1) of the same logits [B, T, V], computed together: what a fusion training step
    costs over a CLM step is then the top-k gather, not a second pass over the vocabulary (bench/bench_core.py)."""
    b, t, vocab = student_logits.shape
    if target_ids.shape[:2] != (b, t) or next_ids.shape != (b, t) or mask.shape != (b, t):
        raise FusebenchError(f"fusion targets {tuple(target_ids.shape)}, next ids {tuple(next_ids.shape)} and mask "
                             f"{tuple(mask.shape)} do not match the student's logits {tuple(student_logits.shape)}.")
    p, has_slot = teacher_probs(target_logprobs)
    weights = p * (has_slot & mask.bool()).unsqueeze(-1)
    ids = target_ids.long().clamp(0, vocab - 1)  # -1 padding slots carry weight 0
    return _ClmAndSparseCrossEntropy.apply(student_logits, next_ids.long(), clm_mask, ids, weights)


def fusion_loss(student_logits: torch.Tensor, target_ids: torch.Tensor, target_logprobs: torch.Tensor,
                mask: torch.Tensor, temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of student_logits [B, T, V] against sparse targets ids/log-probs [B, T, K] on mask [B, T].

    reduction: "mean" over counted positions, "sum", or "none" ([B, T], zeros where not counted).

    For the lowest peak memory in a training step, build this term *before* the CLM term and pass the full-length
    logits with the last position masked out (not a `logits[:, :-1]` slice): autograd runs later-built branches
    first, so the CLM backward then frees its [B, T, V] log-softmax before this backward allocates its gradient
    (bench/bench_core.py measures a peak-memory ratio of 1.00 this way, 1.10 the other way round).
    """
    if temperature <= 0:
        raise FusebenchError(f"the fusion temperature must be > 0; got {temperature}.")
    if reduction not in ("mean", "sum", "none"):
        raise FusebenchError(f"unknown reduction {reduction!r}; expected mean, sum or none.")
    b, t, vocab = student_logits.shape
    if target_ids.shape[:2] != (b, t) or target_logprobs.shape != target_ids.shape or mask.shape != (b, t):
        raise FusebenchError(f"fusion targets {tuple(target_ids.shape)} / {tuple(target_logprobs.shape)} and mask "
                             f"{tuple(mask.shape)} do not match the student's logits {tuple(student_logits.shape)}.")
    p, has_slot = teacher_probs(target_logprobs, temperature)
    counted = has_slot & mask.bool()
    weights = p * counted.unsqueeze(-1)
    ids = target_ids.long().clamp(0, vocab - 1)  # -1 padding slots carry weight 0
    per_pos = _SparseCrossEntropy.apply(student_logits, ids, weights, float(temperature))
    if reduction == "none":
        return per_pos
    if reduction == "sum":
        return per_pos.sum()
    return per_pos.sum() / counted.sum().clamp_min(1)


def combined_loss(clm_loss: torch.Tensor, fusion: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * CLM + (1 - lam) * fusion (the paper's λ = 0.9); lam = 1 is exactly the CLM loss."""
    if not 0.0 <= lam <= 1.0:
        raise FusebenchError(f"λ (fusion.lambda) must lie in [0, 1]; got {lam}.")
    if lam == 1.0:
        return clm_loss
    return lam * clm_loss + (1.0 - lam) * fusion
