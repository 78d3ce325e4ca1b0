"""Fusion functions on hand-computed numbers: MinCE, AvgCE (the reference's softmax(exp(-CE)) weights), per byte."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusebench.align.transfer import transfer_distributions
from fusebench.errors import FusebenchError
from fusebench.extract.store import SequenceDistributions
from fusebench.fuse import DEFAULT_FUSION, FUSION_FUNCTIONS, Candidate, fuse, get_fusion_function


def _cand(ids, probs, ce, n=None) -> Candidate:
    with np.errstate(divide="ignore"):  # log(0) = -inf marks an empty slot
        return Candidate(np.array(ids), np.log(np.array(probs, dtype=np.float64)).astype(np.float32), ce, n)


def test_mince_picks_the_lowest_ce_candidate_for_the_whole_sequence():
    cands = [_cand([[1, 2]], [[0.5, 0.5]], 2.0), _cand([[3, 4]], [[0.9, 0.1]], 1.5), _cand([[5, 6]], [[0.6, 0.4]], 1.7)]
    out = fuse("mince", cands)
    np.testing.assert_array_equal(out.ids, [[3, 4]])
    np.testing.assert_allclose(np.exp(out.logprobs), [[0.9, 0.1]], rtol=1e-6)
    np.testing.assert_array_equal(out.weights, [0, 1, 0])


def test_mince_ties_go_to_the_lowest_index_target_first():
    cands = [_cand([[1]], [[1.0]], 1.25), _cand([[2]], [[1.0]], 1.25), _cand([[3]], [[1.0]], 1.25)]
    assert fuse("mince", cands).ids[0, 0] == 1
    assert fuse("mince", cands[1:]).ids[0, 0] == 2


def test_avgce_averages_renormalised_distributions_with_softmax_of_exp_minus_ce():
    # candidate 0 holds 0.3 / 0.1 of its mass in the top-2 -> renormalised 0.75 / 0.25
    cands = [_cand([[1, 2]], [[0.3, 0.1]], 1.0), _cand([[2, 3]], [[0.5, 0.5]], 2.0)]
    w0 = math.exp(math.exp(-1.0)) / (math.exp(math.exp(-1.0)) + math.exp(math.exp(-2.0)))
    w1 = 1 - w0
    assert w0 == pytest.approx(0.5579, abs=1e-4)  # the reference's weights are nearly uniform
    out = fuse("avgce", cands)
    np.testing.assert_allclose(out.weights, [w0, w1])
    got = dict(zip(out.ids[0].tolist(), np.exp(out.logprobs[0]).tolist()))
    assert got == pytest.approx({1: 0.75 * w0, 2: 0.25 * w0 + 0.5 * w1, 3: 0.5 * w1}, rel=1e-6)
    assert list(got.values()) == sorted(got.values(), reverse=True)


def test_avgce_keeps_a_position_where_one_candidate_is_empty():
    cands = [_cand([[1, -1]], [[1.0, 0.0]], 1.0), _cand([[-1, -1]], [[0.0, 0.0]], 1.0)]
    out = fuse("avgce", cands)
    assert out.ids[0, 0] == 1 and np.isfinite(out.logprobs[0, 0])


def test_mince_per_byte_prefers_the_coarse_tokenizer_with_fewer_total_nats():
    # same 200-byte text: the target predicts 99 tokens at 2.0 nats, a coarse source 49 tokens at 2.5 nats
    cands = [_cand([[1]], [[1.0]], 2.0, n=99), _cand([[2]], [[1.0]], 2.5, n=49)]
    assert fuse("mince", cands).ids[0, 0] == 1            # per token the target looks better
    assert fuse("mince_per_byte", cands, num_bytes=200).ids[0, 0] == 2  # 122.5 < 198 nats
    with pytest.raises(FusebenchError, match="num_bytes"):
        fuse("mince_per_byte", cands)


def test_unknown_fusion_function_lists_the_known_ones():
    with pytest.raises(FusebenchError, match="mince, avgce, mince_per_byte"):
        get_fusion_function("maxce")
    assert DEFAULT_FUSION == "mince" and {"mince", "avgce", "mince_per_byte", "oracle",
                                          "greater_gt_hard"} <= set(FUSION_FUNCTIONS)


def test_candidates_of_different_lengths_are_refused():
    with pytest.raises(FusebenchError, match="different lengths"):
        fuse("mince", [_cand([[1]], [[1.0]], 1.0), _cand([[1], [2]], [[1.0], [1.0]], 1.0)])


def test_candidate_from_store_and_from_transfer_carry_ce_and_token_counts():
    own = SequenceDistributions(np.array([1, 2, 3]), np.array([[2], [3], [4]]), np.zeros((3, 1), np.float32),
                                np.zeros(2, np.float32), 0.7)
    src = SequenceDistributions(np.array([5, 6]), np.array([[2], [3]]), np.zeros((2, 1), np.float32),
                                np.zeros(1, np.float32), 0.4)
    aligned = transfer_distributions(src, own.input_ids, np.array([(0, 0), (0, 1), (1, 2)]), np.arange(10),
                                     source_text="x", target_text="x")
    a, b = Candidate.of(own), Candidate.of(aligned)
    assert (a.ce, a.num_predicted) == (pytest.approx(0.7), 2)
    assert (b.ce, b.num_predicted) == (pytest.approx(0.4), 1)
    assert fuse("mince", [a, b]).weights.tolist() == [0.0, 1.0]


def test_avgce_at_temperature_2_softens_each_candidate_before_mixing_and_not_the_student():
    """The reference: target = sum_i w_i softmax(l_i / T) over each candidate's slots, loss = CE(target, softmax(z)).
    Through the recipe -> train settings -> step loss path, as a FuseLLM model trains."""
    from types import SimpleNamespace

    import torch

    from fusebench.pipeline.recipe import FusionSpec
    from fusebench.train.loop import TrainSettings, step_loss

    t, vocab = 2.0, 6
    cands = [_cand([[1, 2, 3], [0, 0, 0]], [[0.6, 0.3, 0.1], [1.0, 0.0, 0.0]], 1.0),
             _cand([[3, 4, 1], [0, 0, 0]], [[0.5, 0.4, 0.1], [1.0, 0.0, 0.0]], 1.6)]
    w = np.exp(np.exp(-np.array([1.0, 1.6])))
    w /= w.sum()
    expected = np.zeros(vocab)
    for c, wi in zip(cands, w):
        soft = np.exp(c.logprobs[0].astype(np.float64) / t)
        np.add.at(expected, c.ids[0], wi * soft / soft.sum())

    fused = fuse("avgce", cands, temperature=t)
    got = np.zeros(vocab)
    np.add.at(got, fused.ids[0][fused.ids[0] >= 0], np.exp(fused.logprobs[0][fused.ids[0] >= 0].astype(np.float64)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    train = SimpleNamespace(steps=1, batch_size=1, lr=1e-3, warmup_ratio=0.0, schedule="constant", min_lr_ratio=0.1,
                            weight_decay=0.0, betas=(0.9, 0.95), clip=1.0, grad_accum=1, bf16=False, seed=0,
                            checkpoint_every=10)
    settings = TrainSettings.from_specs(train, FusionSpec(temperature=t, function="avgce"))
    logits = torch.tensor(np.random.default_rng(0).normal(size=(1, 2, vocab)), dtype=torch.float32)
    ids, mask = torch.tensor([[2, 5]]), torch.ones(1, 2, dtype=torch.long)
    targets = (torch.from_numpy(fused.ids)[None], torch.from_numpy(fused.logprobs)[None])
    _, _, fus = step_loss(logits, ids, mask, targets, 0.0, settings.temperature, 1.0)
    reference = -(torch.from_numpy(expected).float() * torch.log_softmax(logits[0, 0], -1)).sum()
    assert fus.item() == pytest.approx(reference.item(), rel=1e-5)
    # what mixing first and softening the mixture and the student gives instead: not the reference
    from fusebench.fuse.loss import fusion_loss

    mixed = fuse("avgce", cands)
    old = fusion_loss(logits[:, :1], torch.from_numpy(mixed.ids[:1])[None], torch.from_numpy(mixed.logprobs[:1])[None],
                      torch.ones(1, 1), temperature=t)
    assert abs(old.item() - reference.item()) > 0.05


# --- the oracle (issue 19): the best candidate per sequence by its loss on the target's next tokens -----------

def test_gold_logprobs_take_the_true_tokens_slot_else_the_smallest_slot_and_nan_where_empty():
    from fusebench.fuse.functions import gold_logprobs

    ids = np.array([[5, 6], [7, 8], [-1, -1]])
    with np.errstate(divide="ignore"):
        lp = np.log(np.array([[0.6, 0.3], [0.5, 0.1], [0.0, 0.0]]))
    gold = gold_logprobs(ids, lp, np.array([6, 9, 4, 4]))          # labels run one past the last position
    assert gold[0] == pytest.approx(math.log(0.3))                  # the true token 6 is in a slot
    assert gold[1] == pytest.approx(math.log(0.1))                  # 9 is not: bounded by the smallest slot
    assert np.isnan(gold[2]) and len(gold) == 3                     # no slot: that candidate teaches nothing


def _gold(c: Candidate, labels) -> Candidate:
    from dataclasses import replace

    from fusebench.fuse.functions import gold_logprobs

    return replace(c, gold_lp=gold_logprobs(c.ids, c.logprobs, np.array(labels)))


def test_oracle_picks_the_candidate_that_scores_the_target_tokens_best_where_mince_and_per_byte_do_not():
    labels = [3, 4, 3]
    # the target: a low per-token CE on its own tokens, but its top-1 guesses miss the truth in target space
    own = _gold(_cand([[9, 3], [9, 4], [9, 3]], [[0.8, 0.2]] * 3, 1.0, n=3), labels)
    # a coarse source that looks worse per token and per byte, yet after alignment puts 0.7 on every true token
    src = _gold(_cand([[3, 9], [4, 9], [3, 9]], [[0.7, 0.3]] * 3, 3.0, n=2), labels)
    assert fuse("mince", [own, src]).weights.tolist() == [1.0, 0.0]
    assert fuse("mince_per_byte", [own, src], num_bytes=12).weights.tolist() == [1.0, 0.0]   # 3 < 6 nats
    assert fuse("oracle", [own, src]).weights.tolist() == [0.0, 1.0]  # 3·(−log 0.7) = 1.07 < 3·(−log 0.2) = 4.83


def test_oracle_compares_candidates_only_where_every_one_has_a_distribution():
    labels = [1, 1, 1]
    own = _gold(_cand([[1, 2]] * 3, [[0.5, 0.5]] * 3, 1.0, n=3), labels)
    # the source has no slot at positions 1 and 2 (its tokens do not end there), and is better at position 0
    src = _gold(_cand([[1, 2], [-1, -1], [-1, -1]], [[0.9, 0.1], [0.0, 0.0], [0.0, 0.0]], 1.0, n=1), labels)
    assert fuse("oracle", [own, src]).weights.tolist() == [0.0, 1.0]  # not a win by covering less: position 0 only
    worse = _gold(_cand([[1, 2], [-1, -1], [-1, -1]], [[0.4, 0.6], [0.0, 0.0], [0.0, 0.0]], 1.0, n=1), labels)
    assert fuse("oracle", [own, worse]).weights.tolist() == [1.0, 0.0]


def test_oracle_refuses_candidates_without_gold_log_probs_and_softening_keeps_them():
    plain = [_cand([[1]], [[1.0]], 1.0, n=1), _cand([[2]], [[1.0]], 1.0, n=1)]
    with pytest.raises(FusebenchError, match="oracle"):
        fuse("oracle", plain)
    scored = [_gold(_cand([[2, 1]], [[0.6, 0.4]], 1.0, n=1), [1]), _gold(_cand([[1, 2]], [[0.9, 0.1]], 2.0, n=1), [1])]
    # scored on the model's own probabilities: temperature 5 flattens both toward 0.5 but does not change the pick
    assert fuse("oracle", scored, temperature=5.0).weights.tolist() == [0.0, 1.0]


def test_oracle_reads_real_stores_in_the_extractors_position_convention(tmp_path):
    """On the smoke recipe's real stores: where the target's next token is in the top-k, the oracle's gold log-prob
    is exactly the extractor's (so position j is scored on token j+1), elsewhere it is an upper bound; and the
    oracle fusion picks one candidate per sequence through the training targets."""
    from pathlib import Path

    from fusebench.extract.store import DistributionStore
    from fusebench.fuse.functions import gold_logprobs
    from fusebench.fuse.targets import FusedTargets
    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.pipeline.runner import Runner

    # top-10 (smoke uses 4): the store keeps an out-of-top-k gold log-prob in k spare bits, saturating at
    # (2^k - 1)/16 nats, so only k = 10 (64 nats) holds the exact value to bound against
    g = GraphBuilder(load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml",
                                 ["models.fusellm.fusion.top_k=10"]))
    g.model("fusellm")
    runner = Runner(list(g.stages.values()), tmp_path)
    done = {**runner.run("extract:"), **runner.run("align:")}
    own_sid = next(s for s in done if s.startswith("extract:target@"))
    own = DistributionStore.open(done[own_sid] / "store")
    seqs = [own.sequence(i) for i in range(len(own))]
    exact = bound = 0
    for s in seqs:
        gold = gold_logprobs(s.topk_ids, s.topk_logprobs, s.input_ids[1:])
        hit = (s.topk_ids[:len(gold)] == s.input_ids[1:, None]).any(axis=1)
        np.testing.assert_allclose(gold[hit], s.gold_logprobs[hit], atol=1e-5)
        # (the store rounds an out-of-top-k gold to 1/16 nat: within half a step)
        assert (gold[~hit] >= s.gold_logprobs[~hit] - (1 / 32 + 1e-3)).all()
        exact, bound = exact + hit.sum(), bound + (~hit).sum()
    assert exact > 0 and bound > 0
    aligned = [done[s] for s in done if s.startswith("align:")]
    targets = FusedTargets(done[own_sid], aligned, "oracle", [s.input_ids for s in seqs])
    for i in range(len(seqs)):
        ids, lps = targets(i)
        assert ids.shape == lps.shape and ids.shape[0] == len(seqs[i].input_ids)
    assert targets.chosen.sum() == len(seqs) and len(targets.chosen) == 1 + len(aligned)
