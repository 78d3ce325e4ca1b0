"""Run a causal LM over a tokenized corpus and keep every position's top-k next-token log-probs in a store.

The corpus is cut into shards of `shard_size` sequences; each shard is computed and written atomically, so a crashed
extraction resumes at the first missing shard. Under `accelerate launch` process r computes shards r, r+W, r+2W, ...
and the main process finalises the store once every shard exists. Shards do not depend on how many processes ran
(each shard is batched the same way), so the store is the same single- or multi-process.

Numerics: the forward pass runs in the model's dtype (bf16 on GPU by default, fp32 on CPU); the log-softmax is
computed in float32 as logits - logsumexp(logits), the logsumexp as max + log(sum(exp(logits - max))). The top-k is
taken on the float32 logits (the same order as on log-probs). On CPU (vocabularies >= 2560 at k = 10) both come from
`topk.py`: an exact top-k that keeps the lowest ids among values tied at the k-th place, and an exp-sum whose
polynomial exp is as accurate as torch's float32 one; on GPU from `torch.topk`, which leaves that tie to its kernel,
and torch's exp. Either way slots are by descending log-prob and, among exactly equal values, by ascending id.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fusebench.errors import FusebenchError
from fusebench.extract import topk as fast_topk
from fusebench.extract.store import DistributionStore, SequenceDistributions, StoreWriter
from fusebench.train.data import pad_batch

ComputeFn = Callable[[list[list[int]]], list[SequenceDistributions]]


# ---------------------------------------------------------------------------------------------------- fingerprints


def _hash_files(paths: Iterable[Path], head_tail: int | None = None) -> str:
    """sha256 over names, sizes and contents (or only the first and last `head_tail` bytes of big files)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as f:
            if head_tail is None or size <= 2 * head_tail:
                h.update(f.read())
            else:  # weights: hashing 14 GB per 7B model per run is too slow; head + tail + size tell them apart
                h.update(f.read(head_tail))
                f.seek(size - head_tail)
                h.update(f.read())
    return h.hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    d = Path(model_dir)
    weights = list(d.glob("*.safetensors")) + list(d.glob("*.bin"))
    return _hash_files([p for p in [d / "config.json"] if p.exists()] + weights, head_tail=1 << 20)


def tokenizer_fingerprint(model_dir: str | Path) -> str:
    d = Path(model_dir)
    names = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json")
    return _hash_files([d / n for n in names if (d / n).exists()])


def corpus_fingerprint(token_sequences: list[list[int]]) -> str:
    h = hashlib.sha256()
    for seq in token_sequences:
        arr = np.asarray(seq, dtype=np.int64)
        h.update(arr.size.to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- Hugging Face


def load_model(model_dir: str | Path, device=None, dtype=None, trust_remote_code: bool = False):
    """A safetensors causal LM on `device` (default: cuda if available, else cpu) in `dtype` (default: bf16 on
    GPU, fp32 on CPU), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code, dtype=dtype,
                                                     use_safetensors=True)
    except (OSError, ValueError) as err:
        raise FusebenchError(f"cannot load the model in {model_dir} ({err}). Extraction needs a Hugging Face model "
                             "directory with config.json and *.safetensors weights.") from None
    return model.to(device).eval()


def batches_of_shard(sequences: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices into `sequences`, longest first, in groups of batch_size (sorting keeps right-padding small)."""
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(seqs: list[list[int]], device):
    """Right-padded ids and attention mask on `device` (the training loop's `pad_batch`, as tensors)."""
    import torch

    ids, mask = pad_batch([np.asarray(s, dtype=np.int64) for s in seqs], pad_id=0)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _chunk_rows(vocab: int, device) -> int:
    # on CPU, chunks of ~1 MiB stay in cache between the top-k and the exp-sum pass (measured 2-4x faster than
    # whole-batch ops); on GPU, bigger chunks mean fewer kernel launches, bounded so the float32 upcast stays small
    budget = (1 << 20) if device.type == "cpu" else (1 << 30)
    return max(1, budget // (4 * vocab))


def distributions_of_batch(model, seqs: list[list[int]], top_k: int) -> list[SequenceDistributions]:
    """One right-padded forward pass -> each sequence's top-k log-probs, gold log-probs and CE."""
    import torch

    device = next(model.parameters()).device
    ids, mask = pad_right(seqs, device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        b, length, vocab = logits.shape
        flat = logits.reshape(b * length, vocab)
        nxt = torch.cat([ids[:, 1:], ids[:, :1]], dim=1).reshape(-1, 1)  # next token (wraps at the end: unused)
        blocked = device.type == "cpu" and fast_topk.usable(vocab, top_k)
        if blocked:     # one call for the batch: each row is read once, while in cache (topk.py)
            v, top_i, lse, gold = fast_topk.topk_logsumexp(flat.float().contiguous(), top_k, nxt)
            top_v = v - lse
        else:
            top_v = torch.empty(b * length, top_k, dtype=torch.float32, device=device)
            top_i = torch.empty(b * length, top_k, dtype=torch.long, device=device)
            gold = torch.empty(b * length, dtype=torch.float32, device=device)
        rows = _chunk_rows(vocab, device)
        for lo in range(0, 0 if blocked else b * length, rows):
            x = flat[lo:lo + rows].float()
            v, i = torch.topk(x, top_k, dim=-1, sorted=True)
            # logsumexp from the top-1 (the row max): ~4x faster on CPU than torch.logsumexp, same formula
            lse = v[:, :1] + torch.sub(x, v[:, :1]).exp_().sum(dim=-1, keepdim=True).log_()
            top_v[lo:lo + rows], top_i[lo:lo + rows] = v - lse, i
            gold[lo:lo + rows] = (x.gather(-1, nxt[lo:lo + rows]) - lse)[:, 0]
        # deterministic order among exactly equal values: ascending id, then a stable sort by descending value
        # (the top-k is already sorted by value, and topk.py's ties by id, so only torch.topk's ties need it)
        if not blocked and bool((top_v[:, 1:] == top_v[:, :-1]).any()):
            top_i, by_id = top_i.sort(dim=-1)
            top_v, by_val = top_v.gather(-1, by_id).sort(dim=-1, descending=True, stable=True)
            top_i = top_i.gather(-1, by_val)
        top_v = top_v.reshape(b, length, top_k).cpu().numpy()
        top_i = top_i.reshape(b, length, top_k).cpu().numpy()
        gold = gold.reshape(b, length).cpu().numpy()
    out = []
    for r, s in enumerate(seqs):
        n = len(s)
        g = gold[r, :n - 1]
        out.append(SequenceDistributions(np.asarray(s, dtype=np.int64), top_i[r, :n], top_v[r, :n], g,
                                         float(-g.astype(np.float64).mean())))
    return out


def hf_compute(model, top_k: int, batch_size: int) -> ComputeFn:
    def compute(sequences: list[list[int]]) -> list[SequenceDistributions]:
        result: list[SequenceDistributions | None] = [None] * len(sequences)
        for batch in batches_of_shard(sequences, batch_size):
            for i, d in zip(batch, distributions_of_batch(model, [sequences[i] for i in batch], top_k)):
                result[i] = d
        return result  # type: ignore[return-value]
    return compute


def forward_only_seconds(model, token_sequences: list[list[int]], batch_size: int, shard_size: int = 256) -> float:
    """Wall time of bare forward passes over exactly the batches extraction uses (the benchmark's baseline)."""
    import torch

    device = next(model.parameters()).device
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(token_sequences), shard_size):
            shard = token_sequences[lo:lo + shard_size]
            for batch in batches_of_shard(shard, batch_size):
                ids, mask = pad_right([shard[i] for i in batch], device)
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------- vLLM (untested)


def vllm_compute(model_dir: str | Path, top_k: int, dtype) -> ComputeFn:  # pragma: no cover - needs a GPU
    """UNTESTED on CPU (vLLM needs CUDA): top-k via vLLM's prompt_logprobs; slot order follows vLLM's ranks."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=str(model_dir), dtype=str(dtype or "bfloat16").replace("torch.", ""), trust_remote_code=False,
              max_logprobs=top_k + 1)
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=top_k, prompt_logprobs=top_k)

    def compute(sequences: list[list[int]]) -> list[SequenceDistributions]:
        outs = llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in sequences], params, use_tqdm=False)
        result = []
        for s, out in zip(sequences, outs):
            # prompt_logprobs[t] scores token t given tokens < t, i.e. our position t-1; the generated token's
            # logprobs give the last position's distribution
            rows = list(out.prompt_logprobs[1:]) + [out.outputs[0].logprobs[0]]
            top = [sorted(row.items(), key=lambda kv: kv[1].rank)[:top_k] for row in rows]
            ids = np.array([[t for t, _ in r] for r in top], dtype=np.int64)
            lps = np.array([[lp.logprob for _, lp in r] for r in top], dtype=np.float32)
            gold = np.array([rows[t][s[t + 1]].logprob for t in range(len(s) - 1)], dtype=np.float32)
            result.append(SequenceDistributions(np.asarray(s, dtype=np.int64), ids, lps, gold,
                                                float(-gold.astype(np.float64).mean())))
        return result
    return compute


# ---------------------------------------------------------------------------------------------------- driver


def run_shards(compute: ComputeFn, token_sequences: list[list[int]], writer: StoreWriter, shards: list[int],
               shard_size: int, progress: bool = True, desc: str = "extract") -> None:
    """Compute and write the given shards, skipping those already on disk."""
    from tqdm.auto import tqdm

    todo = [s for s in shards if not writer.has_shard(s)]
    total = sum(len(token_sequences[s * shard_size:(s + 1) * shard_size]) for s in todo)
    with tqdm(total=total, desc=desc, unit="seq", disable=not progress) as bar:
        for s in todo:
            part = token_sequences[s * shard_size:(s + 1) * shard_size]
            writer.write_shard(s, compute(part))
            bar.update(len(part))


def extract_distributions(model_dir: str | Path, token_sequences: list[list[int]], out_dir: str | Path,
                          top_k: int = 10, batch_size: int = 8, device=None, dtype=None, shard_size: int = 256,
                          backend: str = "hf", progress: bool = True,
                          trust_remote_code: bool = False) -> DistributionStore:
    """Extract `model_dir`'s top-k next-token distributions for every token of `token_sequences` into `out_dir`.

    Resumable: finished shards are kept and skipped. A finished store with the same model, tokenizer, corpus and k
    is returned at once. Run under `accelerate launch` to spread shards over processes.
    """
    from accelerate import PartialState

    if backend not in ("hf", "vllm"):
        raise FusebenchError(f"unknown extraction backend {backend!r}; expected 'hf' or 'vllm'.")
    if not token_sequences:
        raise FusebenchError("extract_distributions got no sequences; the corpus is empty.")
    config_path = Path(model_dir) / "config.json"
    if not config_path.exists():
        raise FusebenchError(f"{model_dir} has no config.json; give a Hugging Face model directory.")
    config = json.loads(config_path.read_text())
    vocab_size = int(config.get("vocab_size") or config.get("text_config", {}).get("vocab_size"))
    num_shards = -(-len(token_sequences) // shard_size)
    writer = StoreWriter(out_dir, model_fingerprint(model_dir), tokenizer_fingerprint(model_dir), vocab_size, top_k,
                         corpus_fingerprint=corpus_fingerprint(token_sequences), num_shards=num_shards)
    if (Path(out_dir) / "meta.json").exists():
        return DistributionStore.open(out_dir)

    state = PartialState()
    mine = list(range(state.process_index, num_shards, state.num_processes))
    if any(not writer.has_shard(s) for s in mine):
        if backend == "hf":
            model = load_model(model_dir, device or (state.device if state.device.type != "cpu" else None), dtype,
                               trust_remote_code=trust_remote_code)
            compute = hf_compute(model, top_k, batch_size)
        else:
            compute = vllm_compute(model_dir, top_k, dtype)
        run_shards(compute, token_sequences, writer, mine, shard_size,
                   progress=progress and state.is_local_main_process, desc=f"extract {Path(model_dir).name}")
    state.wait_for_everyone()
    if state.is_main_process:
        writer.finalize(num_shards)
    state.wait_for_everyone()
    return DistributionStore.open(out_dir)
