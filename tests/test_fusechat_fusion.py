"""FuseChat's "greater as ground truth, hard" fusion function on hand-built tensors.

Per sequence the target is the best source's aligned distribution when that source's CE is lower than the pivot's
own, else the gold next token as a one-hot. Expected values are written out by hand, not computed by the code.
"""

from __future__ import annotations

import numpy as np
import pytest

from fusebench.errors import FusebenchError
from fusebench.extract.store import SequenceDistributions
from fusebench.fuse import FUSION_FUNCTIONS, Candidate, fuse

NEG = -np.inf


def _pivot(ce: float) -> Candidate:
    """The pivot's own store sequence over tokens 7 8 9: positions 0, 1 predict 8, 9; position 2 predicts nothing."""
    own = SequenceDistributions(input_ids=np.array([7, 8, 9]), topk_ids=np.array([[8, 3], [9, 4], [1, 2]]),
                                topk_logprobs=np.log(np.array([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]], np.float32)),
                                gold_logprobs=np.log(np.array([0.6, 0.7], np.float32)), sequence_ce=ce)
    return Candidate.of(own)


def _source(ce: float, first_id: int) -> Candidate:
    ids = np.array([[first_id, 5], [9, -1], [-1, -1]])
    lp = np.array([[np.log(0.8), np.log(0.2)], [0.0, NEG], [NEG, NEG]], np.float32)
    return Candidate(ids, lp, ce, 2)


def test_greater_gt_hard_is_registered():
    assert "greater_gt_hard" in FUSION_FUNCTIONS


def test_greater_gt_hard_takes_the_source_when_its_ce_is_lower_than_the_pivots():
    out = fuse("greater_gt_hard", [_pivot(1.0), _source(0.5, 8)])
    np.testing.assert_array_equal(out.ids, [[8, 5], [9, -1], [-1, -1]])
    np.testing.assert_allclose(np.exp(out.logprobs), [[0.8, 0.2], [1.0, 0.0], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(out.weights, [0, 1])


def test_greater_gt_hard_falls_back_to_the_gold_one_hot_not_the_pivots_distribution():
    for source_ce in (1.5, 1.0):  # worse, and a tie: a source must be strictly better
        out = fuse("greater_gt_hard", [_pivot(1.0), _source(source_ce, 8)])
        # gold next tokens 8 and 9 with probability 1; the last position predicts nothing (empty slots)
        np.testing.assert_array_equal(out.ids[:, 0], [8, 9, -1])
        np.testing.assert_array_equal(out.logprobs[:, 0], np.array([0.0, 0.0, NEG], np.float32))
        assert (out.ids[:, 1:] == -1).all() and np.isneginf(out.logprobs[:, 1:]).all()
        np.testing.assert_array_equal(out.weights, [1, 0])  # the pivot's slot stands for its gold labels


def test_greater_gt_hard_picks_the_best_of_several_sources():
    out = fuse("greater_gt_hard", [_pivot(1.0), _source(0.9, 3), _source(0.4, 6), _source(0.6, 2)])
    assert out.ids[0, 0] == 6
    np.testing.assert_array_equal(out.weights, [0, 0, 1, 0])


def test_greater_gt_hard_gold_survives_the_fusion_temperature():
    out = fuse("greater_gt_hard", [_pivot(1.0), _source(2.0, 8)], temperature=2.0)
    np.testing.assert_array_equal(out.logprobs[:2, 0], [0.0, 0.0])


def test_greater_gt_hard_needs_the_pivots_own_candidate_first():
    with pytest.raises(FusebenchError, match="include_own"):
        fuse("greater_gt_hard", [_source(0.5, 8), _source(0.4, 8)])
