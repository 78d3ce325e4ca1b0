"""Run lm-eval on one model: build the lm-eval model object once, then score each suite's tasks through it.

The Hugging Face backend (`HFLM`) is the reference. fusebench loads the model itself (so a fusebench ensemble
directory, safetensors-only loading and the dtype policy apply) and hands the instance to HFLM. vLLM is an optional
GPU backend, imported only when asked for. Requests go through lm-eval's sqlite request cache, keyed per model
weights, so repeating an evaluation replays answers instead of running the model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.evaluate.items import item_records
from fusebench.evaluate.suites import TaskPlan

BACKENDS = ("hf", "vllm")


@dataclass
class ModelHandle:
    """The lm-eval model object plus what the manifest records about how it was built."""

    lm: object
    backend: str
    device: str
    dtype: str
    max_length: int


def build_lm(model: str | Path, *, backend: str = "hf", batch_size: int = 8, device: str | None = None,
             dtype=None, max_length: int | None = None, trust_remote_code: bool = False,
             lm_kwargs: dict | None = None, truncate_long_prompts: bool = False) -> ModelHandle:
    """An lm-eval `LM` for `model` (a directory or hub id); `lm_kwargs` go to lm-eval's model class as given."""
    from fusebench.models.load import ENSEMBLE_MODEL_TYPE, default_device, load_causal_lm, load_tokenizer, model_type

    if backend not in BACKENDS:
        raise FusebenchError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    device = device or default_device()
    if backend == "vllm":
        if model_type(model) == ENSEMBLE_MODEL_TYPE:
            raise FusebenchError(f"{model} is a fusebench ensemble, which vLLM cannot run; use --backend hf.")
        try:
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError as err:
            raise FusebenchError(f"--backend vllm needs vLLM ({err}); install fusebench[gpu] on a CUDA machine, "
                                 "or use the default hf backend.") from err
        lm = VLLM(pretrained=str(model), batch_size=batch_size, dtype=str(dtype or "auto"),
                  max_length=max_length, trust_remote_code=trust_remote_code, **(lm_kwargs or {}))
        guard_generation(lm, str(model), truncate_long_prompts)
        return ModelHandle(lm, backend, "cuda", str(dtype or "auto"), lm.max_length)

    from lm_eval.models.huggingface import HFLM

    hf_model = load_causal_lm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    # never ask for more context than the model has (HFLM reads max_position_embeddings, not MPT's max_seq_len)
    cfg = hf_model.config
    own = next((getattr(cfg, k) for k in ("max_position_embeddings", "max_seq_len", "n_positions")
                if isinstance(getattr(cfg, k, None), int)), None)
    max_length = min(x for x in (max_length, own) if x) if (max_length or own) else None
    lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
              **(lm_kwargs or {}))
    guard_generation(lm, str(model), truncate_long_prompts)
    return ModelHandle(lm, backend, device, str(hf_model.dtype).removeprefix("torch."), lm.max_length)


def guard_generation(lm, model: str, truncate: bool = False) -> None:
    """Make `lm.generate_until` honour a total-length limit and refuse to cut prompts (in place).

    * `max_length` in a task's generation_kwargs is the bigcode harness's limit on prompt + completion tokens (the
      MultiPL-E YAMLs use it). HF's generate() would count the left padding of a batch in it, and vLLM does not know
      it, so each request gets its own max_gen_toks = max_length - its prompt's tokens instead.
    * lm-eval keeps the last (max_length - max_gen_toks) prompt tokens and silently drops the rest: for 3-shot BBH
      that is the task description and the first exemplar. fusebench raises a FusebenchError instead, unless
      `truncate` (recipe `evaluate.truncate_long_prompts`) asks for lm-eval's cut: then each cut prompt is counted
      per task in `lm.fusebench_prompts_cut`, which the manifest records, and a warning is printed.
    """
    generate, score, rolling = lm.generate_until, lm.loglikelihood, lm.loglikelihood_rolling
    lm.fusebench_prompts_cut = {}
    quiet = os.environ.get("FUSEBENCH_QUIET_BARS") == "1"   # `fusebench run`: one bar per stage, not per batch

    def generate_until(requests, disable_tqdm: bool = False):
        return generate([_fit(lm, request, model, truncate) for request in requests],
                        disable_tqdm=disable_tqdm or quiet)

    def loglikelihood_rolling(requests, disable_tqdm: bool = False):
        return rolling(requests, disable_tqdm=disable_tqdm or quiet)

    if quiet and hasattr(lm, "_loglikelihood_tokens"):  # HFLM's rolling path asks it for a bar per batch, always
        tokens = lm._loglikelihood_tokens
        lm._loglikelihood_tokens = lambda requests, disable_tqdm=False, **kw: tokens(requests, disable_tqdm=True, **kw)

    def loglikelihood(requests, disable_tqdm: bool = False):
        for request in requests:  # lm-eval scores the last max_length + 1 tokens of context + continuation
            context, continuation = request.args
            if context:
                n = sum(len(part) for part in lm._encode_pair(context, continuation))
                _check(lm, request, model, truncate, n, n - lm.max_length - 1, "context and continuation")
        return score(requests, disable_tqdm=disable_tqdm or quiet)

    lm.generate_until, lm.loglikelihood, lm.loglikelihood_rolling = generate_until, loglikelihood, loglikelihood_rolling


def _fit(lm, request, model: str, truncate: bool):
    context, gen_kwargs = request.args
    n_prompt = len(lm.tok_encode(context))
    kwargs = dict(gen_kwargs)
    if "max_length" in kwargs:
        kwargs["max_gen_toks"] = max(1, int(kwargs.pop("max_length")) - n_prompt)
    new = int(kwargs.get("max_gen_toks", lm.max_gen_toks))
    _check(lm, request, model, truncate, n_prompt, n_prompt + new - lm.max_length,
           f"prompt and up to {new} new tokens")
    if kwargs == gen_kwargs:
        return request
    return dataclasses.replace(request, arguments=(context, kwargs))


def _check(lm, request, model: str, truncate: bool, n_prompt: int, overflow: int, what: str) -> None:
    """Refuse (or, when `truncate`, count) a request whose first `overflow` prompt tokens lm-eval would drop."""
    if overflow <= 0:
        return
    if not truncate:
        # only a generation request has new tokens to cut; a scored (multiple-choice) one has none
        fewer = "or generate fewer tokens (`--gen_kwargs max_gen_toks=N`), " if "new tokens" in what else ""
        raise FusebenchError(
            f"task {request.task_name} (document {request.doc_id}): the prompt is {n_prompt} tokens, and the "
            f"{what} need {overflow} more than the context of {lm.max_length} tokens {model} is evaluated with, so "
            f"lm-eval would silently cut the first {overflow} tokens of the prompt. Fix: raise the context (recipe "
            "`evaluate.max_length`, `--max_length`; it defaults to the model's own max_position_embeddings and "
            f"cannot exceed it), {fewer}or leave this task out "
            "for a model this short, or accept lm-eval's cut explicitly (recipe `evaluate.truncate_long_prompts: "
            "true`, `--truncate_long_prompts`; the manifest then counts the cut prompts).")
    cut = lm.fusebench_prompts_cut
    if request.task_name not in cut:
        print(f"[fusebench eval] warning: {request.task_name}: prompts that do not fit {lm.max_length} tokens are "
              "cut at the start (evaluate.truncate_long_prompts); counted in the manifest", file=sys.stderr,
              flush=True)
    cut[request.task_name] = cut.get(request.task_name, 0) + 1


def run_plan(handle: ModelHandle, plan: TaskPlan, *, limit: int | None, cache_path: Path | None, seed: int,
             bootstrap_iters: int = 1000, gen_kwargs: dict | str | None = None) -> tuple[dict, dict]:
    """lm-eval's results dict for the plan's tasks (per-document samples removed) and the compact per-item record
    of those samples (fusebench/evaluate/items.py)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in plan.include_paths] or None,
                          include_defaults=plan.uses_builtin_tasks or not plan.include_paths)
    task_names = list(plan.tasks.values())
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[fusebench eval] {len(task_names)} task(s): {', '.join(task_names)}", file=sys.stderr, flush=True)
    try:
        results = lm_eval.simple_evaluate(
            # batch_size and device only record (the model is built) what lm_eval's results would say (issue 22)
            model=handle.lm, batch_size=getattr(handle.lm, "batch_size", None), device=handle.device,
            tasks=task_names, task_manager=manager, limit=limit,
            use_cache=str(cache_path) if cache_path else None, bootstrap_iters=bootstrap_iters, log_samples=True,
            gen_kwargs=gen_kwargs, apply_chat_template=plan.chat_template and _has_chat_template(handle.lm),
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            # code tasks run generated programs, always inside fusebench.evaluate.sandbox
            confirm_run_unsafe_code=True)
    except ConnectionError as err:
        raise FusebenchError(f"lm-eval could not reach the Hugging Face hub for {', '.join(task_names)} ({err}). "
                             "Run without --online to use the packaged offline copies.") from err
    except (FileNotFoundError, ValueError, KeyError) as err:
        if "hub" in str(err).lower() or "offline" in str(err).lower() or "couldn't find" in str(err).lower():
            raise FusebenchError(f"lm-eval could not load the data of {', '.join(task_names)}: "
                                 f"{str(err).splitlines()[0]}. Offline, run without --online (packaged copies); "
                                 "online, check the dataset name and your hub access.") from err
        raise
    samples = results.pop("samples", {}) or {}
    _fill_ratio_stderrs(results, samples)
    return results, item_records(samples)


def _has_chat_template(lm) -> bool:
    return bool(getattr(getattr(lm, "tokenizer", None), "chat_template", None))


def _ratio_stderr(pairs: list) -> tuple[float, float] | None:
    """(R, stderr of R) for R = sum(-loglik_i) / sum(count_i) over documents i (delta method for a ratio of sums)."""
    n, total = len(pairs), sum(c for _, c in pairs)
    if n < 2 or total == 0:
        return None
    ratio = sum(-ll for ll, _ in pairs) / total
    var = n / (n - 1) * sum((-ll - ratio * c) ** 2 for ll, c in pairs)
    return ratio, math.sqrt(var) / total


def _fill_ratio_stderrs(results: dict, samples: dict) -> None:
    """Give the corpus-level ratio metrics a standard error (lm-eval reports N/A for them).

    bits per byte is sum(nll_i) / sum(bytes_i) / ln 2 and word / byte perplexity exp(sum(nll_i) / sum(count_i))
    over documents i; their stderrs follow from the delta-method stderr of the ratio (scaled by 1 / ln 2, or by
    the perplexity itself for exp).
    """
    for task, docs in samples.items():
        res = results["results"].get(task, {})
        for metric in ("bits_per_byte", "word_perplexity", "byte_perplexity"):
            pairs = [d[metric] for d in docs if metric in d]
            if f"{metric},none" not in res or not (found := _ratio_stderr(pairs)):
                continue
            ratio, se = found
            res[f"{metric}_stderr,none"] = se / math.log(2) if metric == "bits_per_byte" else math.exp(ratio) * se
