"""`fusebench eval MODEL`: evaluate one model and print its scores.

Two ways in, one model loader:
* `--suite commonsense,bbh:navigate,...` adds fusebench suites to the results store
  (`RESULTS/RUN_ID/NAME/<suite>.json` + manifest), as recipes do;
* `--tasks` / `--output_path` run like `lm_eval` (fusebench.evaluate.harness): any lm-eval task or group, fusebench
  suites as groups, lm_eval's flags, written by lm-eval's EvaluationTracker with a manifest beside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusebench.errors import FusebenchError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `eval` subcommand's flags: fusebench's own, and lm_eval's under their lm_eval spelling."""
    p.add_argument("model", help="a Hugging Face model directory, a fusebench ensemble directory, or a hub id")
    p.add_argument("--suite", default=None, help="comma-separated fusebench suites: commonsense,bbh,bbh_mc,"
                   "perplexity,lambada,multipl-e,chat,ifeval,chat_judge (suite:task picks one task); results go to "
                   "the results store")
    p.add_argument("--tasks", default=None, help="as lm_eval: comma-separated lm-eval tasks/groups; fusebench "
                   "suites count as groups")
    p.add_argument("--limit", default=None, help="at most N documents per task, or a fraction (< 1) of each")
    p.add_argument("--num_fewshot", type=int, default=None, help="as lm_eval: few-shot examples per prompt")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", default="8", help="an integer or auto")
    p.add_argument("--model_args", default=None, help="as lm_eval: k=v,... (dtype, trust_remote_code, max_length "
                   "are fusebench's loader's; the rest go to lm-eval's HFLM / VLLM)")
    p.add_argument("--gen_kwargs", default=None, help="as lm_eval: k=v,... over every task's generation settings")
    p.add_argument("--apply_chat_template", nargs="?", const=True, default=False,
                   help="as lm_eval: format prompts with the tokenizer's chat template (optionally a named one)")
    p.add_argument("--seed", default=None, help="as lm_eval: one integer or python,numpy,torch,fewshot (default 1234)")
    p.add_argument("--include_path", action="append", default=None, help="as lm_eval: more task YAML folders")
    p.add_argument("--log_samples", action="store_true", help="as lm_eval: write samples_<task>_<time>.jsonl too")
    p.add_argument("--output_path", default=None, help="as lm_eval: results_<time>.json (and samples) under "
                   "OUTPUT_PATH/<model>/, with fusebench's manifest_<time>.json beside")
    p.add_argument("--data", default=None, choices=["packaged", "hub"],
                   help="packaged (default): fusebench's offline copies where it has them; hub: the datasets "
                   "lm-eval's tasks name")
    p.add_argument("--online", action="store_true", help="the same as --data hub")
    p.add_argument("--max_length", type=int, default=None, help="context in tokens (default: the model's own)")
    p.add_argument("--truncate_long_prompts", action="store_true", help="let lm-eval cut the start of prompts "
                   "longer than the context allows (counted in the manifest) instead of stopping with an error")
    p.add_argument("--workdir", default=None, help="where rendered tasks, data and caches go (default: runs/eval)")
    p.add_argument("--results", default="results", help="with --suite: results store to add this evaluation to")
    p.add_argument("--name", default=None, help="with --suite: the model's name in results (default: directory name)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--corpus", action="append", metavar="NAME=DIR",
                   help="for the perplexity suite: a corpus directory holding test.jsonl (repeatable)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="hf (reference) or vllm (GPU only)")
    p.add_argument("--run-id", default=None, help="with --suite: results go to RESULTS/RUN_ID/NAME/ (default: adhoc)")
    p.add_argument("--judge", default=None, help="for the chat_judge suite: the judge, a model directory / hub id "
                   "or openai:URL (an OpenAI-compatible endpoint); without one the answers are marked not judged")
    p.add_argument("--judge-model", default=None, help="with --judge openai:URL: the judge's model name there")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, auto (default: fp32 on CPU, bf16 on GPU)")


def _corpora(specs: list[str] | None) -> dict[str, Path]:
    corpora = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise FusebenchError(f"--corpus {spec!r} is not NAME=DIR (e.g. --corpus legal=runs/tiny/corpora/legal).")
        corpora[name] = Path(path)
    return corpora


def _batch_size(value: str) -> int | str:
    if str(value).isdigit():
        return int(value)
    if str(value).startswith("auto"):
        return value
    raise FusebenchError(f"--batch_size {value!r}: give an integer or auto (as lm_eval).")


def main(args: argparse.Namespace) -> int:
    data = "hub" if args.online else (args.data or "packaged")
    if args.tasks or args.output_path:
        return _harness(args, data)
    from fusebench.evaluate.api import evaluate_model
    from fusebench.evaluate.chat_judge import JudgeSettings, not_judged_lines
    from fusebench.evaluate.harness import parse_limit

    if args.judge and "chat_judge" not in (args.suite or ""):
        raise FusebenchError(f"--judge {args.judge} is used only by the chat_judge suite: add it to --suite "
                             "(e.g. --suite chat_judge --corpus NAME=DIR).")
    limit = parse_limit(args.limit)
    if isinstance(limit, float):
        raise FusebenchError("--suite takes a document count for --limit; fractions work with --tasks.")
    result = evaluate_model(
        args.model, args.suite or "perplexity", name=args.name, limit=limit, workdir=args.workdir,
        results_dir=args.results, run_id=args.run_id, corpora=_corpora(args.corpus),
        batch_size=_batch_size(args.batch_size), device=args.device, online=data == "hub", backend=args.backend,
        dtype=args.dtype, max_length=args.max_length, truncate_long_prompts=args.truncate_long_prompts,
        judge=JudgeSettings(args.judge, args.judge_model))
    print(f"{'task':<42} {'metric':<18} {'value':>9} {'stderr':>9}")
    for s in result.scores:
        stderr = f"{s.stderr:9.4f}" if s.stderr is not None else f"{'-':>9}"
        print(f"{s.task:<42} {s.metric:<18} {s.value:9.4f} {stderr}")
    for line in not_judged_lines(r.results_path for r in result.suites if r.suite == "chat_judge"):
        print(line)
    for r in result.suites:
        print(f"wrote {r.results_path} and {r.manifest_path.name}")
    return 0


def _harness(args: argparse.Namespace, data: str) -> int:
    from lm_eval.utils import make_table

    from fusebench.evaluate.harness import evaluate_tasks, parse_limit

    names = [t.strip() for spec in (args.tasks, args.suite) if spec for t in spec.split(",") if t.strip()]
    results = evaluate_tasks(
        args.model, names, data=data, num_fewshot=args.num_fewshot, batch_size=_batch_size(args.batch_size),
        limit=parse_limit(args.limit), model_args=args.model_args, gen_kwargs=args.gen_kwargs,
        apply_chat_template=args.apply_chat_template, seed=args.seed, include_path=args.include_path,
        log_samples=args.log_samples, output_path=args.output_path, workdir=args.workdir,
        corpora=_corpora(args.corpus), device=args.device, dtype=args.dtype, backend=args.backend,
        max_length=args.max_length, truncate_long_prompts=args.truncate_long_prompts)
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    return 0
