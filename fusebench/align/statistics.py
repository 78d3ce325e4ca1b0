"""Statistics-based token alignment (FuseChat v2): how often DTW pairs each source token with each target token.

`alignment_counts` runs the aligner (DTW by default) over every text of a corpus and counts, for every pair
(source id, target id) on the paths, how many times it occurs: a sparse [source vocab, target vocab] matrix.

The `statistics` vocab map (an entry of `VOCAB_MAPS` beside `em` and `mined`) uses the counts where spelling alone
is ambiguous. Per source token s:
1. special tokens by role and exact spelling matches exactly as `em` (distance 0 cannot be improved on);
2. otherwise, among the ordinary target tokens t that DTW paired with s in the corpus, the one of least
   edit distance weighted by alignment frequency,  ED(s, t) / p(t | s)  with  p(t | s) = count(s, t) / count(s, .):
   a target the corpus pairs with s often beats a rarely paired one at a similar distance (ties: the higher count,
   then the lower id);
3. a token the corpus never aligned falls back to MinED over the whole target vocabulary.
FuseChat's reference picks argmin ED x sigmoid(count) among paired tokens (and ED x 0.1 for substrings); sigmoid
grows with the count, so there a *rarer* pairing wins at equal distance. fusebench weights towards the frequent
pairing, which is what "weighted by alignment frequency" asks for.

The vocab-map stage saves the counts (`alignment_counts.npz`, scipy sparse) beside `vocab_map.npz`, so they stay
inspectable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from rapidfuzz.distance import Levenshtein

from fusebench.align.tokens import tokenize_for_alignment
from fusebench.align.vocab_map import VocabMap, _map_ids, _vocab_texts, build_mined_map, vocab_fingerprint
from fusebench.errors import FusebenchError

COUNTS_FILE = "alignment_counts.npz"


@dataclass
class AlignmentCounts:
    """`matrix[s, t]`: how often the aligner paired source id s with target id t (scipy CSR, int64)."""

    matrix: "object"  # scipy.sparse.csr_matrix; typed loosely so importing this module does not import scipy
    documents: int

    def save(self, path: Path) -> None:
        import scipy.sparse

        scipy.sparse.save_npz(Path(path) / COUNTS_FILE, self.matrix)

    def as_dict(self) -> dict[tuple[int, int], int]:
        coo = self.matrix.tocoo()
        return {(int(s), int(t)): int(c) for s, t, c in zip(coo.row, coo.col, coo.data)}


def alignment_counts(source_tokenizer, target_tokenizer, texts: Iterable[str], aligner: str = "dtw") -> AlignmentCounts:
    """Count the aligner's (source id, target id) pairs over `texts` (each tokenized by both, no special tokens)."""
    import scipy.sparse

    from fusebench.align.registry import get_aligner  # the registry lists this module's map: import late

    align = get_aligner(aligner)
    rows, cols, documents = [], [], 0
    for text in texts:
        if not text:
            continue
        source = tokenize_for_alignment(source_tokenizer, text)
        target = tokenize_for_alignment(target_tokenizer, text)
        if not len(source) or not len(target):  # whitespace one side drops entirely: nothing to pair
            continue
        pairs = align(source, target).pairs
        rows.append(np.asarray(source.ids, dtype=np.int64)[pairs[:, 0]])
        cols.append(np.asarray(target.ids, dtype=np.int64)[pairs[:, 1]])
        documents += 1
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    shape = (len(source_tokenizer), len(target_tokenizer))
    matrix = scipy.sparse.coo_matrix((np.ones(len(r), np.int64), (r, c)), shape=shape).tocsr()  # sums repeats
    matrix.sum_duplicates()
    return AlignmentCounts(matrix, documents)


def statistics_choice(source_text: str, candidates: list[tuple[int, str, int]]) -> int:
    """The target id among `candidates` (target id, text, count > 0) of least ED / p(t | s); see the docstring."""
    total = sum(c for _, _, c in candidates)
    scored = [(Levenshtein.distance(source_text, text) * total / count, -count, t) for t, text, count in candidates]
    return min(scored)[2]


def build_statistics_map(source_tokenizer, target_tokenizer, cache: bool = True, texts: Iterable[str] | None = None,
                         counts: AlignmentCounts | None = None) -> VocabMap:
    """The `statistics` vocab map from the alignment counts over `texts` (or given `counts`). Not cached on disk:
    it depends on the corpus, and the pipeline's vocab-map stage caches it with the corpus in its key."""
    if counts is None:
        if texts is None:
            raise FusebenchError("the 'statistics' vocab map counts DTW alignments over a corpus, so it needs the "
                                 "texts: in a recipe the align stage passes the training chunks; on the command "
                                 "line give --text or --file. Use 'mined' for a map from the vocabularies alone.")
        counts = alignment_counts(source_tokenizer, target_tokenizer, texts)
    src_to_tgt = _map_ids("em", source_tokenizer, target_tokenizer)
    src_texts, tgt_texts = _vocab_texts(source_tokenizer), _vocab_texts(target_tokenizer)
    tgt_special = set(target_tokenizer.all_special_ids)
    matrix = counts.matrix
    unmatched = np.flatnonzero(src_to_tgt < 0)
    never_aligned = []
    for s in unmatched.tolist():
        lo, hi = matrix.indptr[s], matrix.indptr[s + 1]
        candidates = [(int(t), tgt_texts[t], int(c)) for t, c in zip(matrix.indices[lo:hi], matrix.data[lo:hi])
                      if int(t) not in tgt_special and c > 0]
        if candidates:
            src_to_tgt[s] = statistics_choice(src_texts[s], candidates)
        else:
            never_aligned.append(s)
    if never_aligned:  # MinED over the target's ordinary tokens, in `mined`'s preference order
        mined = build_mined_map(source_tokenizer, target_tokenizer, cache=cache).src_to_tgt
        src_to_tgt[never_aligned] = mined[never_aligned]
    return VocabMap("statistics", src_to_tgt.astype(np.int32), vocab_fingerprint(source_tokenizer),
                    vocab_fingerprint(target_tokenizer))


def map_agreement(vocab_map: np.ndarray, source_ids: np.ndarray, target_ids: np.ndarray,
                  transfer: np.ndarray) -> float:
    """Share of transferred positions j (transfer[j] = source position, -1 none) where the map sends the source
    token to exactly the target token there: how often the map's id is the one the target tokenizer really used."""
    got = np.flatnonzero(np.asarray(transfer) >= 0)
    if not len(got):
        return 0.0
    mapped = np.asarray(vocab_map)[np.asarray(source_ids)[np.asarray(transfer)[got]]]
    return float((mapped == np.asarray(target_ids)[got]).mean())


__all__ = ["AlignmentCounts", "alignment_counts", "build_statistics_map", "map_agreement", "statistics_choice"]
