"""Benchmarks of the core data path: store size, extraction overhead, and the cost of the sparse fusion loss.

Each function builds its own tiny world (a byte-level BPE tokenizer and a random GPT-NeoX trained on nothing, text
from the Python standard library), measures against a baseline in the same process, and returns a dict:

- bench_store_bytes  -> store_bytes_per_token_per_model (what every token costs: top-k ids + packed log-probs, the
  gold log-prob included), store_bytes_per_sequence_per_model (the exact CE), store_all_in_bytes_per_token_per_model
  (every file of the model's store, .npy headers and meta.json included, over this small corpus' tokens) and
  tokenized_corpus_bytes_per_token (input ids + sequence offsets, stored once per store).
- bench_extraction   -> extraction_vs_forward_ratio: extraction (forward + float32 log-softmax + top-k + encoding +
  writing shards) over bare forward passes of the same model on the same batches; best of three rounds each.
- bench_fusion_step  -> fusion_step_time_ratio and fusion_step_peak_memory_ratio: a training step with
  λ·CLM + (1-λ)·fusion (sparse top-10 targets) over a plain CLM step, computed as fusebench's training loop does.
  Peak memory = bytes of the live tensors before the step (parameters, optimizer state, the batch and its targets)
  + the highest net allocation during the step, read from the PyTorch profiler's allocation events (CPU) or
  torch.cuda.max_memory_allocated (GPU). Python's tracemalloc does not see tensor memory and is not used.

Times are CPU seconds of the process on CPU (`time.process_time`, so that other jobs on a shared 2-core machine do
not skew a ratio) and wall seconds on GPU; the best of several repeats is kept. All use the same ~5M-parameter model
(hidden 256, 4 layers, vocab 4096); quick mode measures less data. Ratios depend on the model's shape: extraction's
extra work is O(vocab) per token while the forward pass is O(hidden^2 x layers), so real LMs (hidden 4096, vocab
32000) sit far below the tiny model's ratio.
"""

from __future__ import annotations

import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


# one model shape for every mode (the ratios depend on it); quick mode only measures less data, fewer times.
# ~5M parameters: the size RESOURCES.md measures tiny-world training at
VOCAB = 4096


def _size():
    from fusebench.models.build import ModelSize

    return ModelSize(hidden=256, layers=4, heads=4)


def _clock() -> float:
    """CPU seconds of this process on CPU (robust to other jobs on a shared machine); wall seconds on GPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _world(tmp: Path, quick: bool):
    """A trained BPE tokenizer, a random tiny GPT-NeoX saved as a HF directory, and 256-token training sequences."""
    from fusebench.models.build import ModelSize, build_model
    from fusebench.models.tokenizers import train_tokenizer

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [f.read_text(encoding="utf-8") for f in sorted((root / "json").glob("*.py"))
             + sorted((root / "email").glob("*.py"))]
    tok = train_tokenizer("bpe", texts, VOCAB, tmp / "model")
    model = build_model("gpt_neox", len(tok), _size(), tok.bos_token_id, tok.eos_token_id, seed=0)
    model.save_pretrained(tmp / "model")
    ids = np.concatenate([tok(t)["input_ids"] for t in texts])
    n_seq = 16 if quick else 48
    seqs = [ids[i * 256:(i + 1) * 256].tolist() for i in range(n_seq)]
    return tmp / "model", seqs


def bench_store_bytes(quick: bool = False) -> dict:
    from fusebench.extract.extract import extract_distributions

    with tempfile.TemporaryDirectory() as d:
        model_dir, seqs = _world(Path(d), quick)
        store = extract_distributions(model_dir, seqs, Path(d) / "store", top_k=10, batch_size=8, progress=False)
        sizes, tokens = store.nbytes(), store.num_tokens
        per_token = sum(np.load(f, mmap_mode="r").nbytes for f in (Path(d) / "store").glob("shard-*/topk_*.npy"))
        return {"store_bytes_per_token_per_model": per_token / tokens,
                "store_bytes_per_sequence_per_model": 4.0,  # the exact float32 CE
                "store_all_in_bytes_per_token_per_model": (sizes["distributions"] + sizes["meta"]) / tokens,
                "tokenized_corpus_bytes_per_token": sizes["tokenized_corpus"] / tokens,
                "store_tokens": tokens, "store_sequences": store.num_sequences}


def bench_extraction(quick: bool = False) -> dict:
    from fusebench.extract.extract import (forward_only_seconds, hf_compute, load_model, run_shards)
    from fusebench.extract.store import StoreWriter

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d, _single_thread():
        model_dir, seqs = _world(Path(d), quick)
        model = load_model(model_dir, "cpu" if not torch.cuda.is_available() else None)
        vocab = model.config.vocab_size
        compute = hf_compute(model, 10, batch_size=8)
        fwd, ext = [], []
        for r in range(3):  # interleaved rounds; best of each (the machine may be shared)
            start = _clock()
            forward_only_seconds(model, seqs, batch_size=8, shard_size=256)
            fwd.append(_clock() - start)
            writer = StoreWriter(Path(d) / f"store{r}", "m", "t", vocab, 10)
            start = _clock()
            run_shards(compute, seqs, writer, list(range(-(-len(seqs) // 256))), 256, progress=False)
            ext.append(_clock() - start)
        return {"extraction_vs_forward_ratio": min(ext) / min(fwd), "extraction_seconds": min(ext),
                "forward_only_seconds": min(fwd), "extraction_tokens": sum(len(s) for s in seqs)}


def _train_step(model, opt, ids, mask, targets, lam: float) -> None:
    """One optimizer step computing its loss exactly as `fusebench.train.loop` does (`step_loss`)."""
    from fusebench.train.loop import step_loss

    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    tokens = float((mask[:, 1:] * mask[:, :-1]).sum())
    loss, _, _ = step_loss(logits, ids, mask, targets, lam if targets is not None else 1.0, 1.0, tokens)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


class _single_thread:
    """Time with one intra-op thread: on a shared 2-core machine, two OpenMP threads fighting other jobs made the
    same measurement vary 2x; one thread gives stable ratios."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def _live_bytes(*objs) -> int:
    seen, total = set(), 0
    for t in objs:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def _peak_step_bytes(step) -> int:
    """Highest net bytes allocated during step() above what was live before it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # allocation (+) and free (-) events in time order; kineto_results is the profiler's raw event list
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    net = peak = 0
    for _, n in events:
        net += n
        peak = max(peak, net)
    return peak


def bench_fusion_step(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as d:
        _, seqs = _world(Path(d), quick)
    batch, vocab, size = 8, VOCAB, _size()
    ids = torch.tensor(seqs[:batch])
    mask = torch.ones_like(ids)
    g = torch.Generator().manual_seed(1)
    fused = (torch.randint(0, vocab, (*ids.shape, 10), generator=g),
             torch.log_softmax(torch.randn(*ids.shape, 10, generator=g), dim=-1).sort(-1, descending=True).values)
    times, peaks = {}, {}
    with _single_thread():
        for kind, targets in (("clm", None), ("fusion", fused)):
            times[kind], peaks[kind] = _measure_step(ids, mask, targets, vocab, size, 3 if quick else 5)
    return {"fusion_step_time_ratio": times["fusion"] / times["clm"],
            "fusion_step_peak_memory_ratio": peaks["fusion"] / peaks["clm"],
            "clm_step_seconds": times["clm"], "fusion_step_seconds": times["fusion"],
            "clm_step_peak_bytes": peaks["clm"], "fusion_step_peak_bytes": peaks["fusion"]}


def _measure_step(ids, mask, targets, vocab, size, repeats: int) -> tuple[float, int]:
    """(best step time, peak bytes) of training steps on a fresh model (same initial weights for every kind)."""
    from fusebench.models.build import build_model

    model = build_model("gpt_neox", vocab, size, 0, 0, seed=0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        _train_step(model, opt, ids, mask, targets, lam=0.9)

    step()  # warm-up; creates the optimizer state
    persistent = _live_bytes(*model.parameters(), *[s for st in opt.state.values() for s in st.values()],
                             ids, mask, *(targets or ()))
    peak = persistent + _peak_step_bytes(step)
    samples = []
    for _ in range(repeats):
        start = _clock()
        step()
        samples.append(_clock() - start)
    return min(samples), peak
