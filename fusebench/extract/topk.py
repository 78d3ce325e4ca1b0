"""Top-k and logsumexp of float32 logit rows on CPU: the extraction's hot loop, hand-written for speed (issue 21).

One compiled call per batch does, row by row while the row is in cache: its block maxima, its top-k, its
logsumexp and the log-prob of the next token. Per-chunk torch calls (amax, topk, exp, sum, gather) had cost about
as much as the work itself on the benchmark's 4096-row head; one pass over each row instead of three halves it.

Top-k, exact. `torch.topk` on CPU copies every row into (value, index) pairs and partially sorts them, ~2 ns per
vocabulary entry: on the benchmark's model ~8% of a whole forward pass. Here each row is cut into blocks of 64
entries whose maxima come first (16 running lanes per block, vectorised); only the blocks whose maximum reaches the
k-th largest block maximum are read — of those, only the lanes (16 per block) whose maximum is that large — and only
entries at least that large go into the list: every top-k value is at least that large (k blocks each hold an entry
that large), so a typical row reads ~k lanes of 4 and inserts ~k entries. Order: values descending, exactly equal values by ascending id, and among values tied at the
k-th place the lowest ids are kept (torch.topk leaves that choice to its implementation).

Logsumexp, max + log(sum(exp(x - max))) in float32. torch spends three passes on it (subtract, exp, sum) and numba
cannot vectorise `np.exp` without Intel's SVML-patched LLVM (pip's llvmlite is not), so the exp is a polynomial:
2^y = 2^-n · 2^f with n = round(-y), |f| <= 1/2, 2^f by its degree-6 Taylor series and 2^-n written as float32
bits (y clamped at -126; such terms are < 1e-38 of a sum that is >= 1). The sum's relative error is <= 3.2e-7
against float64 on wide and narrow logits (tests/test_topk.py), as torch's own float32 exp-sum (1.9e-7)."""

from __future__ import annotations

import math

import numba
import numpy as np

BLOCK = 64
_LOG2E = np.float32(1.0 / math.log(2.0))
_C0, _C1, _C2, _C3, _C4, _C5, _C6 = (np.float32(math.log(2.0) ** i / math.factorial(i)) for i in range(7))


@numba.njit(nogil=True, cache=True, inline="always")
def _insert(v, ix, m, k, val, j):
    """Insert (val, j) into the list v / ix holding m entries (capacity k), ordered by value descending and, among
    equal values, id ascending (so the entries kept do not depend on the order they arrive in)."""
    if m < k:
        p = m
        m += 1
    elif val > v[k - 1] or (val == v[k - 1] and j < ix[k - 1]):
        p = k - 1
    else:
        return m
    while p > 0 and (val > v[p - 1] or (val == v[p - 1] and j < ix[p - 1])):
        v[p] = v[p - 1]
        ix[p] = ix[p - 1]
        p -= 1
    v[p] = val
    ix[p] = j
    return m


_LANES = 16      # BLOCK is a multiple: a block is read as 16 lanes (entries j ≡ l mod 16), which LLVM vectorises


@numba.njit(nogil=True, cache=True, fastmath={"nnan", "nsz", "reassoc"})
def _block_maxima(row, bm, lanes):
    """bm[b] = max of row's block b and lanes[b, l] = max of its lane l (row padded to whole blocks; nnan: a NaN
    logit is a broken model, not a case to rank). 16 running maxima per block vectorise; a plain running max (a
    loop-carried select) does not: 3x slower."""
    for b in range(bm.shape[0]):
        lo = b * BLOCK
        lane = lanes[b]
        for j in range(_LANES):
            lane[j] = row[lo + j]
        for q in range(lo + _LANES, lo + BLOCK, _LANES):
            for j in range(_LANES):
                v = row[q + j]
                lane[j] = v if v > lane[j] else lane[j]
        m = lane[0]
        for j in range(1, _LANES):
            m = lane[j] if lane[j] > m else m
        bm[b] = m


@numba.njit(nogil=True, cache=True)
def _topk_row(row, bm, lanes, low_v, low_i, v, ix):
    """The row's top k into v / ix (descending; ties by ascending id), reading only the lanes of the blocks that
    can hold one (a lane's 4 entries only where its maximum reaches the bound)."""
    k = v.shape[0]
    m = 0
    for b in range(bm.shape[0]):
        m = _insert(low_v, low_i, m, k, bm[b], b)
    low = low_v[k - 1]
    m = 0
    for b in range(bm.shape[0]):
        if bm[b] < low:                         # nothing in this block can enter
            continue
        for lane in range(_LANES):
            if lanes[b, lane] >= low:           # rare: below `low` no entry can be in the top k
                for q in range(BLOCK // _LANES):
                    j = b * BLOCK + q * _LANES + lane
                    if row[j] >= low:
                        m = _insert(v, ix, m, k, row[j], j)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"})   # no nnan/ninf: -inf logits occur
def _exp_sum(row, m, poly, scale):
    """sum_j exp(row[j] - m). Two loops that vectorise (no calls, no gathers): the first writes each term's
    polynomial and its power of two as float32 bits (into the int32 array `scale`, which the second loop reads
    through a float32 view: numba has no scalar bit cast), the second sums their products (reassociation splits
    the sum)."""
    for j in range(row.shape[0]):
        y = max((row[j] - m) * _LOG2E, np.float32(-126.0))
        n_ = np.int32(-y + np.float32(0.5))                   # y <= 0: n_ = round(-y), f in [-1/2, 1/2]
        f = y + np.float32(n_)
        poly[j] = ((((((_C6 * f + _C5) * f + _C4) * f + _C3) * f + _C2) * f + _C1) * f + _C0)
        scale[j] = (np.int32(127) - n_) << 23                 # the float32 2^-n_ (n_ <= 126: a normal number)
    bits = scale.view(np.float32)
    s = np.float32(0.0)
    for j in range(row.shape[0]):
        s += poly[j] * bits[j]
    return s


@numba.njit(nogil=True, cache=True)
def _rows(x, nxt, out_v, out_i, out_lse, out_gold):
    """Per row, while it is in cache: block maxima, top-k, logsumexp, and the log-prob of the row's next token (one
    call per batch: per-chunk torch calls cost as much as the work on a 4096-row head)."""
    n, vocab = x.shape
    k = out_v.shape[1]
    bm = np.empty(vocab // BLOCK, np.float32)
    lanes = np.empty((vocab // BLOCK, _LANES), np.float32)
    low_v = np.empty(k, np.float32)
    low_i = np.empty(k, np.int64)
    poly = np.empty(vocab, np.float32)
    scale = np.empty(vocab, np.int32)
    for r in range(n):
        row = x[r]
        _block_maxima(row, bm, lanes)
        _topk_row(row, bm, lanes, low_v, low_i, out_v[r], out_i[r])
        top = out_v[r, 0]
        lse = top + np.float32(np.log(_exp_sum(row, top, poly, scale)))
        out_lse[r] = lse
        out_gold[r] = row[nxt[r]] - lse


def usable(vocab: int, k: int) -> bool:
    """Whether the blocked path applies: at least k blocks, and enough of them for the skip to pay."""
    return vocab >= 4 * k * BLOCK


def topk_logsumexp(x, k: int, nxt=None):
    """Top-k values and ids, and the logsumexp, of each row of the contiguous float32 CPU tensor `x` (rows × vocab):
    tensors (rows, k), (rows, k) and (rows, 1); with `nxt` (a next-token id per row) also each row's log-prob of
    it, (rows,)."""
    import torch

    n, vocab = x.shape
    out_v = torch.empty(n, k, dtype=torch.float32)
    out_i = torch.empty(n, k, dtype=torch.long)
    lse = torch.empty(n, 1, dtype=torch.float32)
    gold = torch.empty(n, dtype=torch.float32)
    tail = -vocab % BLOCK           # padded to whole blocks with -inf: no maximum changes, each adds < 1e-38
    padded = x if not tail else torch.nn.functional.pad(x, (0, tail), value=float("-inf"))
    ids = np.zeros(n, np.int64) if nxt is None else nxt.reshape(-1).numpy()
    _rows(padded.numpy(), ids, out_v.numpy(), out_i.numpy(), lse.numpy()[:, 0], gold.numpy())
    return (out_v, out_i, lse) if nxt is None else (out_v, out_i, lse, gold)
