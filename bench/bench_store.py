"""The store's size at real vocabularies and what its compression does to the fusion loss (issue 21 item 7).

bench_store_vocab -> for vocabularies of 32,000 (Llama-2) and 151,936 (Qwen2) rows at k = 10:
  store_bytes_per_token_vocab_{32k,152k} (top-k ids + companded log-probs + gold field, per token per model),
  store_all_bytes_per_token_vocab_{32k,152k} (the same + the token's own id), and
  store_fusion_loss_rel_change: the largest |L(stored) / L(exact) - 1| of the fusion loss
  (fusebench.fuse.loss.fusion_loss, T = 1 and 2) over those stores, against a student near the teacher.
Distributions are shaped like a real LM's: a noisy floor with one token 0-14 nat above it, so the top-1 probability
ranges from ~0 to ~1. Sizes are exact by construction; the loss change is a measurement.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

VOCABS = {"32k": 32_000, "152k": 151_936}


def _peaked(rng, positions: int, vocab: int) -> torch.Tensor:
    logits = rng.normal(0, 2, size=(positions, vocab)).astype(np.float32)
    logits[np.arange(positions), rng.integers(0, vocab, positions)] += rng.uniform(0, 14, positions)
    return torch.log_softmax(torch.from_numpy(logits), -1)


def bench_store_vocab(quick: bool = False) -> dict:
    from fusebench.extract.store import SequenceDistributions, StoreWriter
    from fusebench.fuse.loss import fusion_loss

    k, positions = 10, 64 if quick else 256
    out: dict = {}
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for label, vocab in VOCABS.items():
            rng = np.random.default_rng(0)
            lp = _peaked(rng, positions, vocab)
            top = torch.topk(lp, k, dim=-1)
            ids = rng.integers(0, vocab, positions)
            seq = SequenceDistributions(ids, top.indices.numpy(), top.values.numpy(),
                                        lp[np.arange(positions - 1), ids[1:]].numpy(), 1.0)
            writer = StoreWriter(Path(d) / label, "m", "t", vocab, k)
            writer.write_shard(0, [seq])
            got = writer.finalize().sequence(0)
            shard = Path(d) / label / "shard-00000"
            topk = sum(np.load(shard / n, mmap_mode="r").nbytes for n in ("topk_ids.npy", "topk_nlp.npy"))
            own = np.load(shard / "input_ids.npy", mmap_mode="r").nbytes
            out[f"store_bytes_per_token_vocab_{label}"] = topk / positions
            out[f"store_all_bytes_per_token_vocab_{label}"] = (topk + own) / positions
            student = (lp + torch.from_numpy(rng.normal(0, 1, size=lp.shape).astype(np.float32)))[None]
            mask = torch.ones(1, positions, dtype=torch.bool)
            for temperature in (1.0, 2.0):
                exact = fusion_loss(student, top.indices[None], top.values[None], mask, temperature)
                stored = fusion_loss(student, torch.from_numpy(got.topk_ids)[None],
                                     torch.from_numpy(got.topk_logprobs)[None], mask, temperature)
                worst = max(worst, abs(float(stored) / float(exact) - 1))
    out["store_fusion_loss_rel_change"] = worst
    return out
