"""One training loop for pretraining, CLM continual training, KD and FuseLLM.

    loss = λ · CLM + (1 − λ) · fusion

CLM continual training (and pretraining) is λ = 1 with no teachers; KD is one teacher; FuseLLM is the fused targets
of several aligned sources. The fusion term is a cross-entropy against sparse top-k targets, gathered on their ids
(`fusebench.fuse.loss`), never a dense [batch, length, vocab] teacher tensor.

Runs single-process or under `accelerate launch` (DDP, FSDP, DeepSpeed ZeRO by accelerate config). Every global
batch is fixed by (seed, step) alone, each process takes a contiguous slice of it, and losses are normalised by the
*global* token count, so N processes compute the same update as one. State is checkpointed with
`Accelerator.save_state` into `<resume_dir>/step-N` (written to a temp dir, then renamed), and a restarted run
continues from the newest checkpoint bit-for-bit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fusebench.errors import FusebenchError
from fusebench.jsonl import read_jsonl
from fusebench.train.data import batch_indices, pad_batch

detail = logging.getLogger("fusebench.detail")   # the run's log file only (pipeline/commands.py)

# sequence index -> (ids [T, K], log-probs [T, K]) in the target's vocabulary, position t predicting token t+1
TargetsFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.008
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    grad_accum: int = 1
    bf16: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    lam: float = 1.0
    # the student's temperature in the fusion term: 1, as in the reference. A recipe's fusion.temperature softens
    # each teacher candidate before fusing instead (fusebench.fuse.targets), so from_specs leaves this at 1.
    temperature: float = 1.0

    @classmethod
    def from_specs(cls, train, fusion=None) -> "TrainSettings":
        fields = {k: getattr(train, k) for k in ("steps", "batch_size", "lr", "warmup_ratio", "schedule",
                                                  "min_lr_ratio", "weight_decay", "betas", "clip", "grad_accum",
                                                  "bf16", "seed", "checkpoint_every")}
        if fusion is not None:
            fields.update(lam=fusion.lam)
        return cls(**fields)


def lr_lambda(s: TrainSettings) -> Callable[[int], float]:
    warmup = max(1, math.ceil(s.warmup_ratio * s.steps)) if s.warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if s.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, s.steps - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if s.schedule == "cosine" else 1 - progress
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * decay

    return factor


def deepspeed_plugin(settings: TrainSettings, processes: int):
    """Under a DeepSpeed accelerate config (ACCELERATE_USE_DEEPSPEED=true), accelerate's DeepSpeed plugin with the
    recipe's micro-batch per process, accumulation and clipping; None otherwise.

    accelerate would leave the micro-batch "auto", to be read from a DataLoader this loop does not use (prepare then
    fails), and take `gradient_accumulation_steps` from the accelerate config (1), so DeepSpeed would step the
    optimizer on every micro-batch: grad_accum times per intended step, the schedule running ahead as fast."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return None
    from accelerate.state import AcceleratorState
    from accelerate.utils import DeepSpeedPlugin

    # A process that trains several models (fusebench run: clm, then fusellm, then kd) creates one Accelerator per
    # training; accelerate refuses a plugin for any but the first, so later trainings update the first one's config
    # in place (returning None) and prepare() reads it from there.
    shared = AcceleratorState().deepspeed_plugin if AcceleratorState._shared_state else None
    plugin = shared or DeepSpeedPlugin(gradient_accumulation_steps=settings.grad_accum, gradient_clipping=settings.clip)
    plugin.deepspeed_config.update({
        "train_micro_batch_size_per_gpu": settings.batch_size // (settings.grad_accum * processes),
        "train_batch_size": settings.batch_size, "gradient_accumulation_steps": settings.grad_accum,
        "gradient_clipping": settings.clip})
    return None if shared else plugin


def _optimizer_steps(optimizer) -> int | None:
    """How many updates the wrapped torch optimizer really made (AdamW counts them per parameter)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    steps = [float(s["step"]) for s in getattr(inner, "state", {}).values() if isinstance(s, dict) and "step" in s]
    return int(max(steps)) if steps else None


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # no decay on biases and norms, as is standard for transformer LMs
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _latest_checkpoint(resume_dir: Path) -> tuple[int, Path | None]:
    ckpts = sorted((int(p.name.split("-")[1]), p) for p in resume_dir.glob("step-*") if p.name.split("-")[1].isdigit())
    return ckpts[-1] if ckpts else (0, None)


def train(model, sequences: list[np.ndarray], settings: TrainSettings, resume_dir: Path, pad_id: int,
          targets: TargetsFn | None = None, desc: str = "train", save_dir: Path | None = None,
          loss_masks: list[np.ndarray] | None = None) -> list[dict]:
    """Train `model` in place on `sequences`; returns the per-step log (also written to resume_dir/log.jsonl).

    With `loss_masks` (one bool per token of each sequence: chat replies, `fusebench.train.chat`), both terms count
    only the positions predicting a masked-in token, and are normalised by how many of those the global batch has.

    With `save_dir`, the main process saves the trained model there (safetensors) from the full state dict, which
    accelerate gathers from FSDP / DeepSpeed shards first."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if settings.lam < 1.0 and targets is None:
        raise FusebenchError(f"{desc}: λ = {settings.lam} < 1 needs teachers (targets for the fusion term); "
                             "set lambda: 1.0 for plain CLM training or name teachers.")
    # Batches are global (every process takes a slice), so the schedule advances once per optimizer step; accelerate's
    # default would step it once per process, assuming each process brings a batch of its own. Accumulation goes
    # through accelerate so that DDP syncs and DeepSpeed steps only on the last micro-batch of a step.
    acc = Accelerator(mixed_precision="bf16" if settings.bf16 else "no", step_scheduler_with_optimizer=False,
                      gradient_accumulation_steps=settings.grad_accum,
                      deepspeed_plugin=deepspeed_plugin(settings, int(os.environ.get("WORLD_SIZE", "1"))))
    set_seed(settings.seed)
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        # fp32 master weights whatever dtype the checkpoint was stored in: AdamW on fp16 weights underflows its
        # second moment (eps 1e-8 is 0 in fp16) and gives NaN after one step at lr 1e-5. bf16 stays autocast's job.
        model.float()
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr, betas=settings.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings))
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    acc.register_for_checkpointing(scheduler)

    resume_dir = Path(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    start, ckpt = _latest_checkpoint(resume_dir)
    if ckpt is not None:
        acc.load_state(str(ckpt))
    # the history saved inside the checkpoint, complete before its atomic rename; the log.jsonl beside it is
    # rewritten after every checkpoint, so a crash or a full disk can leave that one cut short
    log_path = ckpt / "log.jsonl" if ckpt is not None and (ckpt / "log.jsonl").exists() else resume_dir / "log.jsonl"
    history = read_jsonl(log_path) if ckpt is not None else []
    history = [h for h in history if h["step"] < start]

    rank, world = acc.process_index, acc.num_processes
    micro = settings.batch_size // settings.grad_accum
    if settings.batch_size % (settings.grad_accum * world):
        raise FusebenchError(f"{desc}: batch_size {settings.batch_size} must divide evenly by grad_accum "
                             f"({settings.grad_accum}) x processes ({world}).")
    model.train()
    bar = tqdm(range(start, settings.steps), desc=desc, initial=start, total=settings.steps,
               disable=not acc.is_local_main_process, unit="step")
    for step in bar:
        batch = batch_indices(len(sequences), settings.batch_size, step, settings.seed)
        ids_all, mask_all = pad_batch([sequences[i] for i in batch], pad_id)
        labels_all = pad_batch([loss_masks[i] for i in batch], 0)[0] if loss_masks is not None else None
        counted = mask_all[:, 1:] * mask_all[:, :-1] * (labels_all[:, 1:] if labels_all is not None else 1)
        total_tokens = float(max(1, counted.sum()))  # predicted positions the loss counts, global
        stats = {"clm": 0.0, "fusion": 0.0}
        for m in range(settings.grad_accum):
            with acc.accumulate(model):
                lo = m * micro + rank * (micro // world)
                part = slice(lo, lo + micro // world)
                ids = torch.from_numpy(ids_all[part]).to(acc.device)
                mask = torch.from_numpy(mask_all[part]).to(acc.device)
                labels = torch.from_numpy(labels_all[part]).to(acc.device) if labels_all is not None else None
                with acc.autocast():
                    logits = model(input_ids=ids, attention_mask=mask).logits.float()
                fused = _batch_targets(targets, batch[part], ids.shape[1], acc.device) if settings.lam < 1 else None
                loss, clm, fus = step_loss(logits, ids, mask, fused, settings.lam, settings.temperature, total_tokens,
                                           labels)
                stats["clm"] += clm.item() * world
                stats["fusion"] += fus.item() * world if fus is not None else 0.0
                if not torch.isfinite(loss):
                    raise FusebenchError(
                        f"{desc}: the loss became {float(loss)} at step {step} (batch of sequences "
                        f"{batch[part].tolist()}). The last checkpoint in {resume_dir} is kept. Lower train.lr, "
                        "check the teachers' stores, or turn off bf16, then run again.")
                # DDP averages gradients over processes and accelerate divides by grad_accum: undo both, since the
                # loss is already a mean over the global batch's tokens
                acc.backward(loss * world * settings.grad_accum)
        grad_norm = acc.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stats = {k: acc.reduce(torch.tensor(v, device=acc.device), "mean").item() for k, v in stats.items()}
        row = {"step": step, "loss": settings.lam * stats["clm"] + (1 - settings.lam) * stats["fusion"],
               **stats, "lr": scheduler.get_last_lr()[0],
               "grad_norm": None if grad_norm is None else float(grad_norm),  # DeepSpeed may not report it
               "optimizer_steps": _optimizer_steps(optimizer), "scheduler_steps": scheduler.scheduler.last_epoch}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if acc.is_main_process and (step % max(1, settings.steps // 20) == 0 or step + 1 == settings.steps):
            # the loss curve in the run's log file (the console keeps one bar per stage)
            detail.info("%s step %d/%d loss %.4f clm %.4f fusion %.4f lr %.3g", desc, step + 1, settings.steps,
                        row["loss"], stats["clm"], stats["fusion"], row["lr"])
        if (step + 1) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
            _checkpoint(acc, resume_dir, step + 1, history)
    acc.wait_for_everyone()
    state_dict = acc.get_state_dict(model) if save_dir is not None else None  # a collective under FSDP / ZeRO-3
    model = acc.unwrap_model(model)
    model.eval()
    if save_dir is not None and acc.is_main_process:
        model.save_pretrained(save_dir, state_dict=state_dict, safe_serialization=True)
    return history


def sum_over_processes(values: np.ndarray) -> np.ndarray:
    """`values` summed element-wise over every process of the run (unchanged with one process). Every process must
    call it: per-process tallies such as the fusion choices, each counted on that process's slice of the batches."""
    from accelerate import PartialState
    from accelerate.utils import reduce

    state = PartialState()
    if state.num_processes == 1:
        return np.asarray(values)
    summed = reduce(torch.as_tensor(np.asarray(values), dtype=torch.float64, device=state.device), "sum")
    return summed.cpu().numpy()


def step_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
              fused: tuple[torch.Tensor, torch.Tensor] | None, lam: float, temperature: float, total_tokens: float,
              label_mask: torch.Tensor | None = None):
    """λ·CLM + (1−λ)·fusion of one micro-batch, each term summed over tokens and divided by the global count.
    With `label_mask` [B, T], position t counts only where token t+1 is masked in (a chat reply's token).

    The fusion term is built *before* the CLM term and on the full-length logits (last position masked out):
    autograd runs later-built branches first, so the CLM backward frees its [B, T, V] log-softmax before the fusion
    backward allocates its gradient, which keeps a fusion step's peak memory at a CLM step's (bench/bench_core.py).
    """
    from fusebench.fuse.loss import clm_and_fusion_terms, combined_loss, fusion_loss

    pred_mask = (mask[:, 1:] * mask[:, :-1]).float()
    if label_mask is not None:
        pred_mask = pred_mask * label_mask[:, 1:].float()
    fus = None
    if fused is not None and temperature == 1.0:  # both terms from one pass over the vocabulary (fuse/loss.py)
        full_mask = torch.nn.functional.pad(pred_mask, (0, 1))  # position t predicts t+1: the last predicts nothing
        next_ids = torch.nn.functional.pad(ids[:, 1:], (0, 1))
        clm_pos, fus_pos = clm_and_fusion_terms(logits, next_ids, full_mask, fused[0], fused[1], full_mask)
        clm, fus = clm_pos.sum() / total_tokens, fus_pos.sum() / total_tokens
        return combined_loss(clm, fus, lam), clm, fus
    if fused is not None:

        full_mask = torch.nn.functional.pad(pred_mask, (0, 1))  # position t predicts t+1: the last predicts nothing
        fus = fusion_loss(logits, fused[0], fused[1], full_mask, temperature, reduction="sum") / total_tokens
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    clm = (nll * pred_mask).sum() / total_tokens
    loss = clm if fus is None else combined_loss(clm, fus, lam)  # callers pass λ = 1 exactly when fused is None
    return loss, clm, fus


def _checkpoint(acc, resume_dir: Path, step: int, history: list[dict]) -> None:
    tmp = resume_dir / f"tmp-step-{step}"
    try:
        acc.save_state(str(tmp))
    except BaseException:
        # e.g. a full disk: drop the half-written state (never a `step-*` name, so never resumed from) to free its
        # space; the previous checkpoint is only removed after this one is complete
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        tmp.rename(resume_dir / f"step-{step}")
        (resume_dir / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        for old in resume_dir.glob("step-*"):  # keep only the newest checkpoint
            if old.name != f"step-{step}":
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def _batch_targets(targets: TargetsFn, seq_ids: np.ndarray, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    got = [targets(int(i)) for i in seq_ids]
    k = max(t[0].shape[1] for t in got)
    ids = np.zeros((len(got), length, k), dtype=np.int64)
    lp = np.full((len(got), length, k), -np.inf, dtype=np.float32)
    for b, (t_ids, t_lp) in enumerate(got):
        n = min(length, t_ids.shape[0])
        ids[b, :n, :t_ids.shape[1]] = t_ids[:n]
        lp[b, :n, :t_ids.shape[1]] = t_lp[:n]
    return torch.from_numpy(ids).to(device), torch.from_numpy(lp).to(device)
