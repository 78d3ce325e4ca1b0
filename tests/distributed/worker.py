"""Launched by tests/test_distributed.py, once as a plain process and once under `torch.distributed.run` with 2
processes (gloo on CPU): extracts a distribution store, then trains a tiny model, so the test can compare the runs.

    python worker.py MODEL_DIR SEQUENCES.json OUT_DIR [STEPS]

Inputs are files (a saved tiny model, token sequences as JSON) because pytest fixtures cannot cross processes.
Both jobs share one launch because starting torch processes costs more than the work itself at this size.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch


def init_distributed_cpu() -> None:
    """On a machine without GPUs, make accelerate use torch.distributed over gloo (its choice with cpu=True) instead
    of treating each process as a lone single-process run. `accelerate launch --cpu` sets the same flag; the
    PartialState is created here because PartialState() does not read that flag itself."""
    from accelerate import PartialState

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"
        PartialState(cpu=True)


def extract(model_dir: str, sequences: list[list[int]], out: Path) -> None:
    from accelerate import PartialState

    from fusebench.extract.extract import extract_distributions

    # shard_size 4 over 12 sequences: 3 shards, so two processes really split the work (shards 0, 2 and 1)
    extract_distributions(model_dir, sequences, out / "store", top_k=5, batch_size=3, shard_size=4, progress=False)
    state = PartialState()
    (out / f"rank{state.process_index}.json").write_text(json.dumps({"world": state.num_processes}))


def synthetic_targets(vocab_size: int, k: int = 4):
    """Deterministic sparse teacher targets per sequence index, shaped as fused stores give them (ids [T, K],
    log-probs [T, K]) and made from the index alone, so every process sees the same values."""
    def targets(i: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([7, i])
        ids = np.stack([rng.choice(vocab_size, k, replace=False) for _ in range(512)])
        logits = rng.normal(size=(512, k))
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return ids.astype(np.int64), logp.astype(np.float32)
    return targets


def train(model_dir: str, sequences: list[list[int]], out: Path, steps: int) -> None:
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    from fusebench.train.loop import TrainSettings, train as train_loop

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    # batch 4 in 2 micro-batches: each of 2 processes takes one sequence per micro-step; a checkpoint at step 2
    # exercises save_state under DDP; λ < 1 exercises the fusion term as well as CLM
    settings = TrainSettings(steps=steps, batch_size=4, grad_accum=2, lr=3e-3, warmup_ratio=0.25, seed=3,
                             checkpoint_every=2, lam=0.7)
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    history = train_loop(model, seqs, settings, out / "resume", pad_id=0,
                         targets=synthetic_targets(model.config.vocab_size), desc="dist-test")
    if PartialState().is_main_process:
        (out / "history.json").write_text(json.dumps(history))
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "weights.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_distributed_cpu()
    model_dir, seq_file, out_dir = sys.argv[1:4]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    sequences = json.loads(Path(seq_file).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extract(model_dir, sequences, out)
    train(model_dir, sequences, out, steps)
