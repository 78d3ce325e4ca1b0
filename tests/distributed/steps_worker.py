"""Launched by tests/test_paper_rehearsal.py once per launcher (plain process; `accelerate launch` with the repo's
DDP, FSDP and DeepSpeed ZeRO-2 configs): trains with fusebench's loop and counts the optimizer and scheduler steps
that really happened, so the test can hold them to the recipe's step count.

    python steps_worker.py MODEL_DIR SEQUENCES.json OUT_DIR STEPS BATCH GRAD_ACCUM

Counting reads the real objects: AdamW's per-parameter step counts (the optimizer is found through torch's global
optimizer-step hook, also under DeepSpeed, whose ZeRO optimizer wraps it) and each LR scheduler's own `_step_count`.
Each rank writes rank<N>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def main(model_dir: str, seq_file: str, out: Path, steps: int, batch: int, grad_accum: int) -> None:
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from transformers import AutoModelForCausalLM

    from fusebench.train.loop import TrainSettings, train

    state = PartialState(cpu=not torch.cuda.is_available())  # what fusebench's runner does on CPU-only machines
    adamw = []  # the recipe's optimizer, found when it steps (DeepSpeed's ZeRO optimizer wraps it)

    def find(opt, args, kwargs) -> None:
        if isinstance(opt, torch.optim.AdamW) and opt not in adamw:
            adamw.append(opt)

    register_optimizer_step_post_hook(find)
    schedulers = []
    step = torch.optim.lr_scheduler.LRScheduler.step

    def recording_step(self, *args, **kwargs):
        if self not in schedulers:
            schedulers.append(self)
        return step(self, *args, **kwargs)

    torch.optim.lr_scheduler.LRScheduler.step = recording_step

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    settings = TrainSettings(steps=steps, batch_size=batch, grad_accum=grad_accum, lr=1e-3, warmup_ratio=0.25,
                             schedule="cosine", min_lr_ratio=0.0, seed=5, checkpoint_every=steps + 1)
    sequences = [np.asarray(s, dtype=np.int64) for s in json.loads(Path(seq_file).read_text())]
    history = train(model, sequences, settings, out / f"resume{state.process_index}", pad_id=0, desc="steps")
    acc_state = AcceleratorState()
    ds = acc_state.deepspeed_plugin.deepspeed_config if acc_state.deepspeed_plugin is not None else None
    report = {
        "world": state.num_processes,
        "distributed_type": str(acc_state.distributed_type).split(".")[-1],
        # updates each parameter received: AdamW's own per-parameter step count. Not the number of AdamW.step()
        # calls, which ZeRO-2 makes once per parameter group per update.
        "optimizer_steps": sorted({int(s["step"]) for opt in adamw for s in opt.state.values()}),
        # _step_count is 1 after the scheduler's own initial step in its constructor
        "scheduler_steps": [s._step_count - 1 for s in schedulers],
        "lrs": [row["lr"] for row in history],
        "losses": [row["loss"] for row in history],
        "deepspeed": None if ds is None else {k: ds.get(k) for k in (
            "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
            "gradient_clipping")} | {"zero_stage": ds.get("zero_optimization", {}).get("stage")},
    }
    (out / f"rank{state.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    torch.set_num_threads(1)
    model_dir, seq_file, out_dir, steps, batch, accum = sys.argv[1:7]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    main(model_dir, seq_file, Path(out_dir), int(steps), int(batch), int(accum))
