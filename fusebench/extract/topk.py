"""Exact top-k of float32 rows on CPU, ties to the lowest id: the extraction's hot loop.

Why not `torch.topk`: on CPU it copies every row into (value, index) pairs and partially sorts them, ~2 ns per
vocabulary entry, which on the benchmark's model is ~8% of a whole forward pass (issue 21). Here each row is cut into
blocks of 64 entries; the blocks' maxima come from one vectorised `amax` pass (~0.3 ns per entry), and only the
blocks whose maximum reaches the k-th largest block maximum are read entry by entry: every top-k value is at least
that large (k blocks each hold an entry that large), so on a typical row k blocks of 64 are read instead of the
whole vocabulary.

The result is exact and has a stated order: values descending, exactly equal values by ascending id, and among
values tied at the k-th place the lowest ids are kept (torch.topk leaves that choice to its implementation).
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 64


@numba.njit(nogil=True, cache=True, inline="always")
def _insert(v, ix, m, k, val, j):
    """Insert (val, j) into the descending list v / ix holding m entries (capacity k); an equal value goes after
    the ones already there (so, entries arriving by ascending id, ties keep the lowest ids)."""
    if m < k:
        p = m
        m += 1
    elif val > v[k - 1]:
        p = k - 1
    else:
        return m
    while p > 0 and val > v[p - 1]:
        v[p] = v[p - 1]
        ix[p] = ix[p - 1]
        p -= 1
    v[p] = val
    ix[p] = j
    return m


@numba.njit(nogil=True, cache=True)
def _topk_rows(x, block_max, out_v, out_i):
    n, vocab = x.shape
    k = out_v.shape[1]
    blocks = block_max.shape[1]
    low_v = np.empty(k, np.float32)
    low_i = np.empty(k, np.int64)
    for r in range(n):
        row, bm, v, ix = x[r], block_max[r], out_v[r], out_i[r]
        m = 0
        for b in range(blocks):
            m = _insert(low_v, low_i, m, k, bm[b], b)
        low = low_v[k - 1]
        m = 0
        for b in range(blocks):
            if bm[b] < low or (m == k and not bm[b] > v[k - 1]):   # nothing in this block can enter
                continue
            for j in range(b * BLOCK, min((b + 1) * BLOCK, vocab)):
                if row[j] >= low:                   # rare: below `low` no entry can be in the top k
                    m = _insert(v, ix, m, k, row[j], j)


def usable(vocab: int, k: int) -> bool:
    """Whether the blocked path applies: at least k blocks, and enough of them for the skip to pay."""
    return vocab >= 4 * k * BLOCK


def topk(x, k: int):
    """Top-k values and ids of each row of the contiguous float32 CPU tensor `x` (rows × vocab), as tensors."""
    import torch
    import torch.nn.functional as F

    n, vocab = x.shape
    tail = -vocab % BLOCK
    padded = F.pad(x, (0, tail), value=float("-inf")) if tail else x
    block_max = padded.view(n, -1, BLOCK).amax(-1)
    out_v = torch.empty(n, k, dtype=torch.float32)
    out_i = torch.empty(n, k, dtype=torch.long)
    _topk_rows(x.numpy(), block_max.numpy(), out_v.numpy(), out_i.numpy())
    return out_v, out_i
