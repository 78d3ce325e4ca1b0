"""Launched by tests/test_train_memory.py under `torch.distributed.run` (2 processes, gloo): peak host RSS of each
rank while it loads the init model the training stage's way and trains it, as the rehearsal's ranks would.

    python memory_worker.py MODEL_DIR OUT_DIR STEPS

Writes OUT_DIR/rank<r>.json: ru_maxrss (bytes) after imports and the process group, after loading, after training.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
import torch


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _warm_up() -> None:
    """What loading any model costs whatever its size (the model classes' imports, allocator arenas): paid before
    the baseline, so the growth measured after is the model's."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    AutoModelForCausalLM.from_config(config)


def main(model_dir: str, out: str, steps: int) -> None:
    from accelerate import PartialState

    from fusebench.train.load import load_init_model, placement
    from fusebench.train.loop import TrainSettings, train

    state = PartialState(cpu=True)
    _warm_up()
    record = {"rank": state.process_index, "world": state.num_processes, "baseline": peak()}
    # FSDP's loading measured as a GPU launch does it (on CPU accelerate would run the FSDP config as DDP)
    fsdp = os.environ.get("ACCELERATE_USE_FSDP") == "true"
    model = load_init_model(model_dir, trust_remote_code=False, fsdp=fsdp)
    record.update(loaded=peak(), placement=placement(fsdp)[1],
                  meta=any(p.is_meta for p in model.parameters()),
                  param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
    if steps:
        rng = np.random.default_rng(0)
        seqs = [rng.integers(3, model.config.vocab_size, 32) for _ in range(8)]
        train(model, seqs, TrainSettings(steps=steps, batch_size=4, lr=1e-4, checkpoint_every=1000),
              Path(out) / f"resume{state.process_index}", 0)
        record["trained"] = peak()
    Path(out, f"rank{state.process_index}.json").write_text(json.dumps(record))
    state.wait_for_everyone()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
