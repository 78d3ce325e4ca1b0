"""Alignment by where tokens end in the text: a linear two-pointer sweep.

Both tokenizations cover the same text, so each token ends at a position of it: its byte end, from the running
length of the decoded token texts (`fusebench.align.ends`; needs token ids only, so it works on distribution stores
too, which keep no character offsets). The sweep pairs the current source and target tokens and then advances the
one that ends first (both when they end together), which yields a monotone path from (0, 0) to (n-1, m-1) with the
same steps DTW uses — in O(n + m) instead of O(n·m). Every pair of tokens that end at the same byte closes a block
of this path, so the transfer gives every such target position its source's distribution.

Tokens sharing one end position (zero-length tokens) are kept together: when the ends tie and both sides have more pieces ending there, both advance; when only one side has,
it advances alone, so the other side's last piece pairs with the surplus pieces instead of skipping ahead.
The cost is the summed edit distance of the paired tokens' normalised texts, comparable with `dtw`'s (never lower
than the optimum).
"""

from __future__ import annotations

import numpy as np
from rapidfuzz.distance import Levenshtein

from fusebench.align.ends import token_ends
from fusebench.align.tokens import Alignment, Tokenization
from fusebench.errors import FusebenchError


def align_by_offsets(source: Tokenization, target: Tokenization) -> Alignment:
    """Monotone alignment of two tokenizations of one text from where their tokens end."""
    for side, tok in (("source", source), ("target", target)):
        if len(tok) == 0:
            raise FusebenchError(f"cannot align an empty {side} token sequence: the text tokenized to no tokens.")
    src_end, tgt_end = (e.tolist() for e in token_ends(source, target))
    n, m = len(src_end), len(tgt_end)
    pairs = []
    i = j = 0
    while True:
        pairs.append((i, j))
        if i == n - 1 and j == m - 1:
            break
        if i == n - 1:
            j += 1
        elif j == m - 1:
            i += 1
        elif src_end[i] < tgt_end[j]:
            i += 1
        elif tgt_end[j] < src_end[i]:
            j += 1
        else:  # ends tie: pieces sharing this end pair up diagonally; the longer run's surplus advances alone
            src_run, tgt_run = src_end[i + 1] == src_end[i], tgt_end[j + 1] == tgt_end[j]
            i += src_run or not tgt_run
            j += tgt_run or not src_run
    a, b = source.texts, target.texts
    cost = sum(Levenshtein.distance(a[p], b[q]) for p, q in pairs)
    return Alignment(np.array(pairs, dtype=np.int32), float(cost))
