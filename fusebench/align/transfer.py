"""Move a source model's top-k distributions onto the target's token positions and vocabulary.

Semantics (position j of a sequence holds the distribution that predicts token j+1, as in the store):

An alignment path `pairs` ([L, 2] int32 of (source_index, target_index), monotone, from (0, 0) to the last tokens
of both, as the DTW aligners return it) groups tokens into blocks covering the same text. A source position's
distribution predicts what follows its token, so it can stand in for a target position's only where both tokens
*end* the same block: target j receives source i's distribution exactly when i is the last source token paired with
j and j is the last target token paired with i. That covers the cases:

- 1:1 (source i <-> target j only): j gets i's distribution.
- n:1 (sources i..i+m <-> target j): j gets i+m's, the one predicting what follows the whole group.
- 1:n (source i <-> targets j..j+m): j+m gets i's; the inner positions j..j+m-1 predict pieces inside one source
  token, which no source distribution describes, so they fall back (below).
- m:n blocks (staircases in the DTW path) follow the same rule: only the block's last target position gets one.

A block of a minimum-edit-distance path need not cover the same text on both sides (DTW pairs Llama's `▁pat`, whose
next token is `ents`, with MPT's `Ġpatents`, whose distribution predicts " to"), so with `source_ends` /
`target_ends` (where each token ends in the text, `fusebench.align.ends`; the align stage always passes them) a
block's last pair transfers only when the two tokens also end at the same byte; other positions fall back.

The source's top-k ids go through `vocab_map` (int32, source id -> target id, -1 = no counterpart): unmapped ids are
dropped, ids that land on the same target id are merged by log-sum-exp, slots are re-sorted by descending log-prob
and padded with id -1 / log-prob -inf. Log-probs are kept as they are (not renormalised; the fusion loss
renormalises over the slots).

Fallback: positions with no transferred distribution (inner 1:n positions, ends that differ, or every top-k id
unmapped) get a one-hot
of the target's *next* token, j+1: what a distribution at j predicts. The target's last position has no next token
and gets no target at all (all padding; the loss skips it). `fallback="current"` reproduces the reference
implementation's off-by-one, a one-hot of the *current* token j, for ablations.

Both sequences must spell the same text: the caller passes `source_text` and `target_text` (decoded texts, or any
fingerprint of them such as a sha256) and a mismatch raises FusebenchError, so a store whose sequences were cut
differently from the target's can never be aligned silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusebench.errors import FusebenchError
from fusebench.extract.store import SequenceDistributions

PAD_ID = -1
FALLBACKS = ("next", "current")


@dataclass
class AlignedDistributions:
    """A source's distributions in target space: position j predicts target token j+1."""

    input_ids: np.ndarray      # [T] int64, the target's tokens
    topk_ids: np.ndarray       # [T, k] int64 target ids, PAD_ID (-1) in empty slots
    topk_logprobs: np.ndarray  # [T, k] float32, -inf in empty slots
    sequence_ce: float         # the source model's own per-sequence CE (on its own tokenization)
    source_index: np.ndarray   # [T] int32: the source position transferred to j, -1 where j fell back
    num_predicted: int = 0     # how many positions the source's CE averages over (its length - 1)

    @property
    def fallback_rate(self) -> float:
        return float((self.source_index < 0).mean())


def merge_duplicate_ids(ids: np.ndarray, logprobs: np.ndarray,
                        width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, merge slots sharing an id by log-sum-exp and drop PAD_ID / -inf slots.

    Returns ([T, W] ids, [T, W] float32 log-probs) sorted by descending log-prob within each row and padded with
    PAD_ID / -inf; W is `width` (rows with more distinct ids keep their best W) or the widest row's count.
    """
    t, w = ids.shape
    if t == 0 or w == 0:
        width = width or 0
        return np.full((t, width), PAD_ID, np.int64), np.full((t, width), -np.inf, np.float32)
    big = np.iinfo(np.int64).max
    key = np.where((ids < 0) | ~np.isfinite(logprobs), big, ids.astype(np.int64))
    order = np.argsort(key, axis=1, kind="stable")
    flat_id = np.take_along_axis(key, order, 1).ravel()
    flat_lp = np.take_along_axis(logprobs.astype(np.float64), order, 1).ravel()
    run_start = np.ones(t * w, dtype=bool)
    run_start[1:] = flat_id[1:] != flat_id[:-1]
    run_start[::w] = True  # runs never cross rows
    starts = np.flatnonzero(run_start)
    with np.errstate(invalid="ignore"):
        run_lp = np.logaddexp.reduceat(flat_lp, starts)
    run_id, run_row = flat_id[starts], starts // w
    keep = run_id != big
    run_id, run_lp, run_row = run_id[keep], run_lp[keep], run_row[keep]
    rank = np.arange(run_row.size) - np.searchsorted(run_row, run_row, side="left")
    full = int(rank.max()) + 1 if rank.size else 0
    out_id = np.full((t, max(full, 1)), PAD_ID, np.int64)
    out_lp = np.full((t, max(full, 1)), -np.inf, np.float64)
    out_id[run_row, rank] = run_id
    out_lp[run_row, rank] = run_lp
    by_lp = np.argsort(-out_lp, axis=1, kind="stable")
    out_id, out_lp = np.take_along_axis(out_id, by_lp, 1), np.take_along_axis(out_lp, by_lp, 1)
    width = width if width is not None else full
    if out_id.shape[1] < width:
        pad = width - out_id.shape[1]
        out_id = np.pad(out_id, ((0, 0), (0, pad)), constant_values=PAD_ID)
        out_lp = np.pad(out_lp, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_id[:, :width], out_lp[:, :width].astype(np.float32)


def _check_path(pairs: np.ndarray, n_src: int, n_tgt: int) -> np.ndarray:
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
        raise FusebenchError(f"an alignment path must be an [L, 2] array of (source, target) indices; got shape "
                             f"{pairs.shape}.")
    steps = np.diff(pairs, axis=0)
    if (tuple(pairs[0]) != (0, 0) or tuple(pairs[-1]) != (n_src - 1, n_tgt - 1)
            or ((steps != 0) & (steps != 1)).any() or (steps.sum(axis=1) == 0).any()):
        raise FusebenchError(
            f"the alignment path does not cover a {n_src}-token source and a {n_tgt}-token target monotonically "
            f"(it runs from {tuple(pairs[0])} to {tuple(pairs[-1])}). The path and the sequences come from "
            "different tokenizations; re-run the alignment stage.")
    return pairs.astype(np.int64)


def _check_text(source_text: str, target_text: str) -> None:
    if source_text == target_text:
        return
    at = next((i for i, (a, b) in enumerate(zip(source_text, target_text)) if a != b),
              min(len(source_text), len(target_text)))
    raise FusebenchError(
        f"the source sequence's text differs from the target's at character {at} "
        f"(source {source_text[max(0, at - 20):at + 20]!r} vs target {target_text[max(0, at - 20):at + 20]!r}). "
        "The source store was built from differently cut or normalised text; extract the source on the same "
        "chunks as the target (delete its store and rerun the extraction).")


def end_matched_sources(pairs: np.ndarray, n_src: int, n_tgt: int) -> np.ndarray:
    """[n_tgt] int64: the source position whose distribution target j receives, -1 where none does."""
    last_of_src = np.r_[pairs[1:, 0] != pairs[:-1, 0], True]   # pair is the last one of its source token
    last_of_tgt = np.r_[pairs[1:, 1] != pairs[:-1, 1], True]
    last_tgt_of_src = np.full(n_src, -1, np.int64)
    last_tgt_of_src[pairs[last_of_src, 0]] = pairs[last_of_src, 1]
    last_src_of_tgt = np.full(n_tgt, -1, np.int64)
    last_src_of_tgt[pairs[last_of_tgt, 1]] = pairs[last_of_tgt, 0]
    ends_together = last_tgt_of_src[last_src_of_tgt] == np.arange(n_tgt)
    return np.where(ends_together, last_src_of_tgt, -1)


def keep_coinciding(src_of: np.ndarray, source_ends: np.ndarray, target_ends: np.ndarray) -> np.ndarray:
    """`src_of` with -1 wherever the source token does not end where the target token does."""
    got = np.flatnonzero(src_of >= 0)
    out = np.full_like(src_of, -1)
    same = source_ends[src_of[got]] == target_ends[got]
    out[got[same]] = src_of[got[same]]
    return out


def one_hot_fallback(target_ids: np.ndarray, fallback: str) -> np.ndarray:
    """[T] int64: the id each position's one-hot fallback puts its mass on (PAD_ID at the last position for 'next')."""
    if fallback == "next":
        return np.r_[target_ids[1:], PAD_ID].astype(np.int64)
    if fallback == "current":
        return target_ids.astype(np.int64)
    raise FusebenchError(f"unknown fallback {fallback!r}; expected one of {', '.join(FALLBACKS)}.")


def transfer_distributions(source: SequenceDistributions, target_ids: np.ndarray, pairs: np.ndarray,
                           vocab_map: np.ndarray, *, source_text: str, target_text: str,
                           fallback: str = "next", source_ends: np.ndarray | None = None,
                           target_ends: np.ndarray | None = None) -> AlignedDistributions:
    """Source distributions -> target positions and ids (semantics in the module docstring)."""
    _check_text(source_text, target_text)
    target_ids = np.asarray(target_ids, dtype=np.int64)
    n_src, n_tgt = source.length, len(target_ids)
    pairs = _check_path(pairs, n_src, n_tgt)
    fallback_ids = one_hot_fallback(target_ids, fallback)
    if source.topk_ids.max(initial=0) >= len(vocab_map):
        raise FusebenchError(f"the vocab map covers {len(vocab_map)} source ids but the source store holds id "
                             f"{int(source.topk_ids.max())}: the map was built for another tokenizer.")
    k = source.topk_ids.shape[1]

    src_of = end_matched_sources(pairs, n_src, n_tgt)
    if source_ends is not None and target_ends is not None:
        if len(source_ends) != n_src or len(target_ends) != n_tgt:
            raise FusebenchError(f"token ends cover {len(source_ends)} source and {len(target_ends)} target tokens, "
                                 f"the sequences {n_src} and {n_tgt}: they come from other tokenizations.")
        src_of = keep_coinciding(src_of, source_ends, target_ends)
    rows = np.flatnonzero(src_of >= 0)
    mapped = vocab_map[source.topk_ids[src_of[rows]]].astype(np.int64)
    lp = np.where(mapped >= 0, source.topk_logprobs[src_of[rows]], -np.inf)
    merged_ids, merged_lp = merge_duplicate_ids(mapped, lp, width=k)

    ids = np.full((n_tgt, k), PAD_ID, np.int64)
    lps = np.full((n_tgt, k), -np.inf, np.float32)
    ids[rows], lps[rows] = merged_ids, merged_lp
    empty = ~np.isfinite(lps[:, 0])  # never aligned, or every id unmapped
    src_of[empty] = -1
    fill = empty & (fallback_ids >= 0)
    ids[fill, 0], lps[fill, 0] = fallback_ids[fill], 0.0
    return AlignedDistributions(target_ids, ids, lps, source.sequence_ce, src_of.astype(np.int32),
                                num_predicted=n_src - 1)
