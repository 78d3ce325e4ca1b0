"""Fusion functions: several candidates' sparse distributions for one sequence -> one sparse target.

A candidate is the target model's own top-k or a source's, already moved into the target's positions and vocabulary
(`fusebench.align.transfer`), together with that model's per-sequence CE on the sequence. All functions take a list
of candidates (by convention the target's own first) and return a `FusedTarget`:

- `mince` (the paper's default): per sequence, the candidate with the lowest CE. Ties go to the lowest index, so the
  target's own distribution wins a tie with a source.
- `avgce` (the paper's AvgCE): a weighted average of the candidates' probability distributions, with weights
  softmax_i(exp(-CE_i)) over the candidates, as in the reference implementation (weights are therefore close to
  uniform: exp(-CE) lies in (0, 1]). Each candidate's top-k is first renormalised over its own slots (the teacher
  distributions of the reference are softmaxes over the top-k), and the average runs over the union of their ids.
- `mince_per_byte`: MinCE on CE per byte of text instead of per token. A model with a coarser tokenizer predicts
  fewer, harder tokens, so its per-token CE looks worse for the same text; total nats / bytes does not have that bias.
  The text is the same for every candidate, so this picks the lowest total nats CE_i x predicted_tokens_i.
- `greater_gt_hard` (FuseChat's "greater as ground truth, hard"): per sequence, the lowest-CE source's distribution
  if that CE is strictly lower than the target's (pivot's) own, else the gold next token as a one-hot. The pivot's
  own top-k is never a target: a source teaches only where it models the sequence better, and elsewhere the fusion
  term reduces to the CLM loss. Needs the target's own candidate first (`fusion.include_own`, the default).
- `oracle` (beyond the paper; a reference row, not a method a user would deploy): per sequence, the candidate whose
  distribution *as the student receives it* (in the target's positions and ids) scores the target's actual next
  tokens best. See `oracle` for the definition.

The fusion temperature T is applied to each candidate *before* fusing (`soften`: softmax over its slots of
log-prob / T), as the reference implementation does, and not to the student's logits: for AvgCE the mixture of
softened candidates differs from a softened mixture at T != 1. `fuse(..., temperature=T)` and the training targets
(`fusebench.fuse.targets`) do this; the fusion functions themselves see already softened candidates.

Outputs are log-probs over K slots (id -1 / log-prob -inf in empty slots); the fusion loss renormalises over slots.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from fusebench.align.transfer import PAD_ID, AlignedDistributions, merge_duplicate_ids
from fusebench.errors import FusebenchError
from fusebench.extract.store import SequenceDistributions


@dataclass
class Candidate:
    """One model's sparse distributions for a sequence, in target positions and ids, with its CE on the sequence."""

    ids: np.ndarray        # [T, k] int64 target ids, -1 in empty slots
    logprobs: np.ndarray   # [T, k] float32, -inf in empty slots
    ce: float              # mean nats per predicted token, on the model's own tokenization
    num_predicted: int | None = None  # how many tokens that mean is over (needed by per-byte variants)
    gold: np.ndarray | None = None  # [T] int64 next target token per position (-1 at the last); own store only
    gold_lp: np.ndarray | None = None  # [T'] log-prob given to the target's next token (`gold_logprobs`; the oracle)

    @classmethod
    def of(cls, d: SequenceDistributions | AlignedDistributions) -> "Candidate":
        """From the target's own store sequence or from a source transferred into target space."""
        if isinstance(d, AlignedDistributions):
            return cls(d.topk_ids, d.topk_logprobs, float(d.sequence_ce), d.num_predicted)
        gold = np.append(np.asarray(d.input_ids[1:], dtype=np.int64), PAD_ID)  # position t predicts token t+1
        return cls(d.topk_ids, d.topk_logprobs, float(d.sequence_ce), d.length - 1, gold)


@dataclass
class FusedTarget:
    ids: np.ndarray       # [T, K] int64, -1 in empty slots
    logprobs: np.ndarray  # [T, K] float32, -inf in empty slots
    weights: np.ndarray   # [num_candidates] float64: each candidate's share (one-hot for MinCE variants)


FusionFn = Callable[[Sequence[Candidate], "int | None"], FusedTarget]


def _check(candidates: Sequence[Candidate]) -> np.ndarray:
    if not candidates:
        raise FusebenchError("a fusion function needs at least one candidate distribution.")
    lengths = {c.ids.shape[0] for c in candidates}
    if len(lengths) > 1:
        raise FusebenchError(f"fusion candidates cover different lengths {sorted(lengths)}; every source must be "
                             "aligned to the target's positions first.")
    ce = np.array([c.ce for c in candidates], dtype=np.float64)
    if not np.isfinite(ce).all():
        raise FusebenchError(f"a candidate's per-sequence CE is not finite ({ce.tolist()}); its store is damaged: "
                             "delete it and rerun the extraction.")
    return ce


def _pick(candidates: Sequence[Candidate], scores: np.ndarray) -> FusedTarget:
    best = int(np.argmin(scores))  # first minimum: ties go to the lowest index, the target's own first
    weights = np.zeros(len(candidates))
    weights[best] = 1.0
    c = candidates[best]
    return FusedTarget(np.asarray(c.ids, dtype=np.int64), np.asarray(c.logprobs, dtype=np.float32), weights)


def mince(candidates: Sequence[Candidate], num_bytes: int | None = None) -> FusedTarget:
    return _pick(candidates, _check(candidates))


def mince_per_byte(candidates: Sequence[Candidate], num_bytes: int | None = None) -> FusedTarget:
    ce = _check(candidates)
    if not num_bytes or any(c.num_predicted is None for c in candidates):
        raise FusebenchError("mince_per_byte needs the sequence's byte length and each candidate's number of "
                             "predicted tokens; use mince, or pass num_bytes.")
    total_nats = ce * np.array([c.num_predicted for c in candidates], dtype=np.float64)
    return _pick(candidates, total_nats / num_bytes)


def avgce_weights(ce: np.ndarray) -> np.ndarray:
    """The reference's AvgCE weights: softmax over candidates of exp(-CE)."""
    score = np.exp(-np.asarray(ce, dtype=np.float64))
    e = np.exp(score - score.max())
    return e / e.sum()


def _renormalise(logprobs: np.ndarray) -> np.ndarray:
    lp = logprobs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.max(lp, axis=1, keepdims=True)
        lse = top + np.log(np.exp(lp - np.where(np.isfinite(top), top, 0)).sum(axis=1, keepdims=True))
        return np.where(np.isfinite(lse), lp - lse, -np.inf)


def avgce(candidates: Sequence[Candidate], num_bytes: int | None = None) -> FusedTarget:
    weights = avgce_weights(_check(candidates))
    ids = np.concatenate([c.ids for c in candidates], axis=1)
    lps = np.concatenate([_renormalise(c.logprobs) + np.log(w) for c, w in zip(candidates, weights)], axis=1)
    ids = np.where(np.isfinite(lps), ids, PAD_ID)
    fused_ids, fused_lp = merge_duplicate_ids(ids, lps)
    return FusedTarget(fused_ids, fused_lp, weights)


def greater_gt_hard(candidates: Sequence[Candidate], num_bytes: int | None = None) -> FusedTarget:
    ce = _check(candidates)
    pivot = candidates[0]
    if pivot.gold is None:
        raise FusebenchError("greater_gt_hard needs the target's own distributions as the first candidate (its "
                             "CE is the bar a source must beat, its tokens the gold labels): set fusion.include_own "
                             "to true.")
    if len(candidates) > 1:
        best = 1 + int(np.argmin(ce[1:]))  # first minimum among the sources
        if ce[best] < ce[0]:
            weights = np.zeros(len(candidates))
            weights[best] = 1.0
            c = candidates[best]
            return FusedTarget(np.asarray(c.ids, dtype=np.int64), np.asarray(c.logprobs, dtype=np.float32), weights)
    gold = np.asarray(pivot.gold, dtype=np.int64)
    ids = np.full((len(gold), 1), PAD_ID, dtype=np.int64)
    ids[:, 0] = gold
    lp = np.where(gold >= 0, 0.0, -np.inf).astype(np.float32)[:, None]  # log 1 on the gold token
    weights = np.zeros(len(candidates))
    weights[0] = 1.0  # the pivot's slot in fusion_choices.json counts the sequences trained on gold labels
    return FusedTarget(ids, lp, weights)


# --- the oracle: what the paper's per-sequence choice could at best be (issue 19) -------------------------------

def gold_logprobs(ids: np.ndarray, logprobs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per target position j, the candidate's log-prob of the target's actual next token labels[j].

    A token outside the candidate's top-k is given the smallest log-prob among its slots: the top-k are the model's
    most likely tokens, so that is an upper bound on what it gave the true one (the same bound for every candidate).
    A position with no slot (the source's tokens did not end there) is NaN: that candidate teaches nothing there."""
    n = min(len(labels), ids.shape[0])
    ids, lp, labels = np.asarray(ids[:n]), np.asarray(logprobs[:n], dtype=np.float64), np.asarray(labels[:n])
    filled = np.isfinite(lp)
    hit = (ids == labels[:, None]) & filled
    floor = np.where(filled, lp, np.inf).min(axis=1)
    gold = np.where(hit.any(axis=1), np.where(hit, lp, -np.inf).max(axis=1), floor)
    return np.where(filled.any(axis=1), gold, np.nan)


def oracle(candidates: Sequence[Candidate], num_bytes: int | None = None) -> FusedTarget:
    """Per sequence, the candidate (the target's own and every source) with the lowest total nats on the target's
    next tokens, counted over the positions where *every* candidate has a distribution (equal text, equal positions:
    no candidate wins by covering less, none loses to a coarser tokenizer), each candidate's log-probs as extracted
    (its model's probabilities, moved into target ids), a token outside its top-k charged at its smallest slot
    (`gold_logprobs`).

    Why this and not MinCE per byte: both use the sequence's own tokens (held-out text for every source: the mix
    corpus is disjoint from the sources' training pools), but MinCE per byte judges each model on its own
    tokenization, before alignment; the oracle judges what alignment delivered to the student, so it is the best
    per-sequence choice of a teacher that the fusion loss can see. Ties (and a sequence no candidate fully covers
    anywhere) go to the lowest index, the target's own first."""
    _check(candidates)
    if any(c.gold_lp is None for c in candidates):
        raise FusebenchError("the oracle fusion needs each candidate's log-prob of the target's next tokens "
                             "(Candidate.gold_lp, filled by fusebench.fuse.targets); use mince or mince_per_byte.")
    n = min(len(c.gold_lp) for c in candidates)
    gold = np.stack([np.asarray(c.gold_lp[:n], dtype=np.float64) for c in candidates])
    common = np.isfinite(gold).all(axis=0)
    return _pick(candidates, -gold[:, common].sum(axis=1))


FUSION_FUNCTIONS: dict[str, FusionFn] = {"mince": mince, "avgce": avgce, "mince_per_byte": mince_per_byte,
                                         "greater_gt_hard": greater_gt_hard, "oracle": oracle}
DEFAULT_FUSION = "mince"


def get_fusion_function(name: str) -> FusionFn:
    try:
        return FUSION_FUNCTIONS[name]
    except KeyError:
        raise FusebenchError(f"unknown fusion function {name!r}; known: {', '.join(FUSION_FUNCTIONS)}.") from None


def soften(candidate: Candidate, temperature: float) -> Candidate:
    """The candidate's distribution at `temperature`: log-softmax over its slots of log-prob / T (T = 1: unchanged)."""
    if temperature <= 0:
        raise FusebenchError(f"the fusion temperature must be > 0; got {temperature}.")
    if temperature == 1.0:
        return candidate
    lp = _renormalise(np.asarray(candidate.logprobs, dtype=np.float64) / temperature).astype(np.float32)
    return replace(candidate, logprobs=lp)   # CE, counts and gold stay the model's own: selection is not softened


def fuse(name: str, candidates: Sequence[Candidate], num_bytes: int | None = None,
         temperature: float = 1.0) -> FusedTarget:
    """Apply the fusion function `name` to one sequence's candidates, each softened at `temperature` first."""
    return get_fusion_function(name)([soften(c, temperature) for c in candidates], num_bytes)
