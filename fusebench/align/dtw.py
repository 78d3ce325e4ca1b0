"""Dynamic time warping over two token sequences, the paper's token alignment.

The path runs from (0, 0) to (n-1, m-1) with steps (1, 1), (1, 0) and (0, 1); a cell's cost is the Levenshtein
distance between the two tokens' normalised texts (see `fusebench.align.tokens`), and the path minimises the summed
cost. Its cost is the exact minimum of that dynamic program; `dtw` and `dtw_reference` return the same path.

Tie-break (deterministic): walking back from (n-1, m-1), among predecessors of equal accumulated cost we prefer
the diagonal (i-1, j-1), then (i-1, j) (the source token alone advances), then (i, j-1) (the target alone).

Why `dtw` is fast: a 2048-token document uses only a few hundred distinct token strings per side, so edit
distances are computed once per distinct (source, target) string pair with rapidfuzz's bit-parallel Levenshtein
(`process.cdist`), and the O(n·m) recurrence plus the walk back run in numba (two rows of costs, one byte of
chosen step per cell). `dtw_reference` is
the straightforward version — a Python double loop calling an edit distance in every cell, as FuseLLM's reference
implementation does — kept as the tests' oracle and the benchmark's baseline.
"""

from __future__ import annotations

import numba
import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusebench.align.tokens import Alignment, Tokenization
from fusebench.errors import FusebenchError


def dtw(source: Tokenization, target: Tokenization) -> Alignment:
    """Exact minimum-cost monotone alignment of `source` and `target` tokens (fast path)."""
    _check_nonempty(source, target)
    src_codes, src_unique = _codes(source.texts)
    tgt_codes, tgt_unique = _codes(target.texts)
    pair_cost = process.cdist(src_unique, tgt_unique, scorer=Levenshtein.distance, dtype=np.int32, workers=1)
    step, cost = _forward(src_codes, tgt_codes, pair_cost)
    return Alignment(_walk_back(step), float(cost))


def dtw_reference(source: Tokenization, target: Tokenization) -> Alignment:
    """The same alignment as `dtw`, computed the plain way: Python loops, one edit distance per cell."""
    _check_nonempty(source, target)
    a, b = source.texts, target.texts
    n, m = len(a), len(b)
    acc = [[0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            cost = Levenshtein.distance(a[i], b[j])
            if i == 0 and j == 0:
                best = 0
            elif i == 0:
                best = acc[i][j - 1]
            elif j == 0:
                best = acc[i - 1][j]
            else:
                best = min(acc[i - 1][j - 1], acc[i - 1][j], acc[i][j - 1])
            acc[i][j] = best + cost
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag, up, left = acc[i - 1][j - 1], acc[i - 1][j], acc[i][j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    return Alignment(np.array(path[::-1], dtype=np.int32), float(acc[n - 1][m - 1]))


def _check_nonempty(source: Tokenization, target: Tokenization) -> None:
    if len(source) == 0 or len(target) == 0:
        raise FusebenchError(
            f"cannot align an empty token sequence (source has {len(source)} tokens, target {len(target)}): "
            "every text to align must tokenize to at least one token on both sides."
        )


def _codes(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each text's index into the list of distinct texts, so distances are computed once per distinct pair."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int32, count=len(texts))
    return codes, list(index)


# Which predecessor a cell's optimum came from; the forward pass records it so the walk back needs no costs.
_DIAG, _UP, _LEFT = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def _forward(src_codes, tgt_codes, pair_cost):
    """acc[i, j] = cost(i, j) + min(acc[i-1, j-1], acc[i-1, j], acc[i, j-1]), keeping two rows of acc and one
    byte per cell for the chosen step: a full int32 cost matrix would be 4x the memory, and at 2048x2048 the page
    faults of allocating it cost more than the recurrence itself."""
    n, m = src_codes.shape[0], tgt_codes.shape[0]
    step = np.empty((n, m), dtype=np.uint8)
    prev = np.empty(m, dtype=np.int64)
    cur = np.empty(m, dtype=np.int64)
    row = pair_cost[src_codes[0]]
    left = 0
    for j in range(m):
        left += row[tgt_codes[j]]
        prev[j] = left
        step[0, j] = _LEFT
    for i in range(1, n):
        row = pair_cost[src_codes[i]]
        left = prev[0] + row[tgt_codes[0]]
        cur[0] = left
        step[i, 0] = _UP
        for j in range(1, m):
            # ties keep the earlier candidate: diagonal, then up, then left (the documented tie-break)
            best, chosen = prev[j - 1], _DIAG
            if prev[j] < best:
                best, chosen = prev[j], _UP
            if left < best:
                best, chosen = left, _LEFT
            left = best + row[tgt_codes[j]]
            cur[j] = left
            step[i, j] = chosen
        prev, cur = cur, prev
    return step, prev[m - 1]


@numba.njit(cache=True, nogil=True)
def _walk_back(step):
    n, m = step.shape
    path = np.empty((n + m - 1, 2), dtype=np.int32)
    i, j, k = n - 1, m - 1, 0
    path[0, 0], path[0, 1] = i, j
    while i > 0 or j > 0:
        s = step[i, j]
        if s != _LEFT:
            i -= 1
        if s != _UP:
            j -= 1
        k += 1
        path[k, 0], path[k, 1] = i, j
    return path[: k + 1][::-1].copy()
