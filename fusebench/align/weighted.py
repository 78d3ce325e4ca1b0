"""FuseChat's statistics-weighted transfer: where one target token spans several source tokens, mix their
distributions by how often the corpus aligned each of them to that target token.

The `statistics` aligner (an entry of `ALIGNERS`) is DTW's path with this change to the transfer. fusebench's own
rule (`fusebench.align.transfer`) gives a target position j whose token spells source tokens i..i+m (an n:1 block)
the distribution of i+m alone: it is the one that predicts what follows the whole block, as j's does. FuseChat v2
instead mixes the distributions of all m+1 source positions, weighted by the corpus alignment counts
count(source token, target token) (`fusebench.align.statistics`):

    p_j(x) = sum_k w_k p_k(x),   w_k = count(s_k, t_j) / sum_k' count(s_k', t_j)    over the block's sources k

(FuseChat takes a softmax of the raw counts, which for counts in the thousands is a one-hot on the most frequent
piece; fusebench weights in proportion.) The inner positions i..i+m-1 predict pieces *inside* the target token, not
what follows it, so this is a reproduction of FuseChat's rule for comparison, not a refinement: the position keeps
`source_index` i+m, and coverage / precision are those of DTW. Only target positions that already receive a
distribution change; a block's members are the source tokens the path pairs with j and nothing else, plus i+m.
"""

from __future__ import annotations

import numpy as np

from fusebench.align.transfer import AlignedDistributions, merge_duplicate_ids
from fusebench.extract.store import SequenceDistributions


def block_members(pairs: np.ndarray, n_src: int, n_tgt: int, src_of: np.ndarray) -> dict[int, np.ndarray]:
    """{target j: the source positions of its n:1 block, ascending} for receiving positions with 2+ members."""
    pairs = np.asarray(pairs, dtype=np.int64)
    first = np.full(n_src, n_tgt, np.int64)
    last = np.full(n_src, -1, np.int64)
    np.minimum.at(first, pairs[:, 0], pairs[:, 1])
    np.maximum.at(last, pairs[:, 0], pairs[:, 1])
    only = np.flatnonzero(first == last)  # source tokens the path pairs with one target token
    out: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(np.asarray(src_of) >= 0).tolist():
        members = np.union1d(only[first[only] == j], [src_of[j]])
        if len(members) > 1:
            out[j] = members
    return out


def weight_blocks(aligned: AlignedDistributions, source: SequenceDistributions, pairs: np.ndarray,
                  vocab_map: np.ndarray, counts) -> AlignedDistributions:
    """`aligned` with each n:1 block's position holding the count-weighted mixture of its sources' distributions.

    `counts` is the [source vocab, target vocab] sparse count matrix; a block whose members were never counted
    with the target token keeps fusebench's own (last-source) distribution."""
    src_ids = np.asarray(source.input_ids, dtype=np.int64)
    tgt_ids = np.asarray(aligned.input_ids, dtype=np.int64)
    k = aligned.topk_ids.shape[1]
    ids, lps = aligned.topk_ids.copy(), aligned.topk_logprobs.copy()
    for j, members in block_members(pairs, len(src_ids), len(tgt_ids), aligned.source_index).items():
        c = np.asarray(counts[src_ids[members], tgt_ids[j]].todense(), dtype=np.float64).ravel()
        if c.sum() <= 0:
            continue
        with np.errstate(divide="ignore"):
            log_w = np.log(c / c.sum())
        mapped = np.asarray(vocab_map)[source.topk_ids[members]].astype(np.int64)
        lp = np.where(mapped >= 0, source.topk_logprobs[members] + log_w[:, None], -np.inf)
        row_ids, row_lp = merge_duplicate_ids(mapped.reshape(1, -1), lp.reshape(1, -1), width=k)
        if np.isfinite(row_lp[0, 0]):  # every id unmapped: keep what the transfer gave
            ids[j], lps[j] = row_ids[0], row_lp[0]
    return AlignedDistributions(aligned.input_ids, ids, lps, aligned.sequence_ce, aligned.source_index,
                                aligned.num_predicted)
