"""Fused training targets, computed per sequence when a batch asks for them (nothing dense is ever stored).

The candidates of sequence i are the target model's own top-k (from its distribution store; left out for plain KD)
and each teacher's top-k moved into target space (from the aligned stores); the fusion function (MinCE, AvgCE, ...) turns them into one
sparse target; each candidate is softened at the fusion temperature first (`functions.soften`, as the reference).
A teacher whose tokens were cut short on sequence i (aligned CE = inf) is left out for that sequence.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fusebench.align.corpus import AlignedStore
from fusebench.errors import FusebenchError
from fusebench.extract.store import DistributionStore
from fusebench.fuse.functions import Candidate, get_fusion_function, gold_logprobs, soften


class FusedTargets:
    def __init__(self, own_stage: Path, aligned_stages: list[Path], function: str, sequences: list[np.ndarray],
                 num_bytes: list[int] | None = None, include_own: bool = True, temperature: float = 1.0):
        self.own = DistributionStore.open(Path(own_stage) / "store")
        # an aligned store, or the distribution store of a teacher that shares the target's tokenizer (graph.py)
        self.teachers = [AlignedStore(Path(a) / "store") if _is_aligned(Path(a) / "store")
                         else DistributionStore.open(Path(a) / "store") for a in aligned_stages]
        self.fuse = get_fusion_function(function)
        self.sequences = sequences
        self.num_bytes = num_bytes  # UTF-8 bytes of each sequence's text, for per-byte fusion functions
        self.include_own = include_own  # False for plain KD: the teacher alone is the target
        self.temperature = temperature  # softens each candidate before fusing; the student is not softened
        for store in (self.own, *self.teachers):
            if len(store) != len(sequences):
                raise FusebenchError(f"a distribution store holds {len(store)} sequences but training has "
                                     f"{len(sequences)}: they come from different chunks stages. Rerun the recipe.")
        self.chosen = np.zeros(1 + len(self.teachers))  # how often each candidate is picked (MinCE) / its weight

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        seq = self.sequences[i]
        own = self.own.sequence(i)
        if not np.array_equal(own.input_ids[:len(seq)], seq):
            raise FusebenchError(f"sequence {i}: the target's distribution store was extracted from other tokens "
                                 "than training uses (tokenizer changed?). Delete the extract stage and rerun.")
        candidates, present = ([Candidate.of(own)], [0]) if self.include_own else ([], [])
        for j, store in enumerate(self.teachers, 1):
            a = store.sequence(i)
            if isinstance(store, DistributionStore):  # same tokenizer: the teacher read exactly these tokens
                if not np.array_equal(a.input_ids[:len(seq)], seq):
                    raise FusebenchError(f"sequence {i}: the teacher's store was extracted from other tokens than "
                                         "training uses, though both share a tokenizer. Rerun its extract stage.")
                candidates.append(Candidate.of(a))
                present.append(j)
            elif np.isfinite(a.ce):
                candidates.append(Candidate(a.ids, a.logprobs, a.ce, a.num_predicted))
                present.append(j)
        if not candidates:  # every teacher was cut short on this sequence: fall back to the target's own
            candidates, present = [Candidate.of(own)], [0]
        labels = seq[1:]   # what each candidate is scored on by the oracle (gold log-probs, before softening)
        candidates = [replace(c, gold_lp=gold_logprobs(c.ids, c.logprobs, labels)) for c in candidates]
        fused = self.fuse([soften(c, self.temperature) for c in candidates],
                          self.num_bytes[i] if self.num_bytes else None)
        self.chosen[present] += fused.weights
        n = len(seq)
        return fused.ids[:n], fused.logprobs[:n]


def _is_aligned(store: Path) -> bool:
    """An aligned store's meta names its aligner; a distribution store's does not."""
    import json

    meta = store / "meta.json"
    return meta.exists() and "aligner" in json.loads(meta.read_text())
