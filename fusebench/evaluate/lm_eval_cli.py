"""lm_eval's `run` command line inside `fusebench eval`.

The flags are lm_eval's own: `add_lm_eval_arguments` asks lm_eval's `run` subcommand (lm_eval/_cli/run.py) to add
its arguments to fusebench's parser, so every flag, short form (-t -L -o -s -b -f ...), space-separated list and
help text is lm_eval's, and a flag a later lm_eval adds appears here too. `main` then follows lm_eval's
`Run._execute`: EvaluatorConfig.from_cli (a --config YAML, defaults, validation), simple_evaluate with the same
arguments, W&B / Trackio / Hub logging, the results and samples files, --show_config, the header line and the
tables — with the model fusebench loads (fusebench/evaluate/harness.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace

from fusebench.errors import FusebenchError

LM_MODEL_DEST = "lm_model"  # lm_eval's --model (hf, vllm): its own dest would overwrite fusebench's MODEL
DEFAULT_BATCH_SIZE = "8"    # fusebench's default (lm_eval's is 1), recorded as lm_eval records --batch_size 8
# the lm_eval flags (argparse dests) fusebench passes on as lm_eval does; a flag a later lm_eval adds is refused
# until it is wired in here and in harness.run_lm_eval (tests/test_eval_cli_flags.py names it)
HANDLED = frozenset({
    "help", "config", "tasks", "model", "model_args", "apply_chat_template", "limit", "use_cache", "num_fewshot",
    "batch_size", "max_batch_size", "device", "gen_kwargs", "output_path", "log_samples", "samples",
    "cache_requests", "check_integrity", "system_instruction", "fewshot_as_multiturn", "include_path", "verbosity",
    "write_out", "show_config", "wandb_args", "wandb_config_args", "trackio_args", "hf_hub_log_args",
    "predict_only", "seed", "trust_remote_code", "confirm_run_unsafe_code", "metadata"})


def _lm_eval_run_arguments(parser: argparse.ArgumentParser) -> None:
    from lm_eval._cli.run import Run

    Run._add_args(SimpleNamespace(_parser=parser))  # lm_eval's method only touches self._parser


def add_lm_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of `lm_eval run` on `parser`, as lm_eval defines it."""
    _lm_eval_run_arguments(parser)
    for action in parser._actions:
        if "--model" in action.option_strings:
            action.dest = LM_MODEL_DEST


def lm_eval_dests() -> list[str]:
    """The Namespace names lm_eval's `run` parser fills (what EvaluatorConfig.from_cli reads)."""
    parser = argparse.ArgumentParser(add_help=False)
    _lm_eval_run_arguments(parser)
    return [a.dest for a in parser._actions]


def given_lm_eval_flags(args: argparse.Namespace) -> list[str]:
    """The lm_eval flags set in `args` (not left at their defaults), as --name."""
    names = {d: LM_MODEL_DEST if d == "model" else d for d in lm_eval_dests() if d != "help"}
    return [f"--{d}" for d, attr in names.items() if getattr(args, attr, None) not in (None, False, [], {})]


def config_from_args(args: argparse.Namespace):
    """lm_eval's EvaluatorConfig for the lm_eval flags in `args` (CLI > --config YAML > defaults), with fusebench's
    defaults where lm_eval's would not fit: batch size 8, and the device fusebench picks (cuda if there is one)."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    given = {d: getattr(args, LM_MODEL_DEST if d == "model" else d) for d in lm_eval_dests()
             if hasattr(args, LM_MODEL_DEST if d == "model" else d)}
    unwired = sorted(d for d in given if d not in HANDLED and given[d] not in (None, False, [], {}))
    if unwired:
        raise FusebenchError(f"lm_eval flag(s) {', '.join('--' + d for d in unwired)}: this lm_eval has them, but "
                             "fusebench eval does not pass them on yet; run lm_eval itself for them.")
    backend = getattr(args, "backend", None)
    if backend and given.get("model") and backend != given["model"]:
        raise FusebenchError(f"--backend {backend} and --model {given['model']} disagree; give one (--model is "
                             "lm_eval's spelling).")
    given["model"] = given.get("model") or backend
    try:
        yaml = EvaluatorConfig.load_yaml_config(given["config"]) if given.get("config") else {}
        cfg = EvaluatorConfig.from_cli(argparse.Namespace(**given))
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise FusebenchError(f"{err}") from None
    if "batch_size" not in given and "batch_size" not in yaml:
        cfg.batch_size = DEFAULT_BATCH_SIZE
    if not given.get("device") and "device" not in yaml:
        cfg.device = None  # lm_eval's default is cuda:0; fusebench uses cuda if available, else cpu
    return cfg


def main(args: argparse.Namespace, data: str) -> int:
    """`fusebench eval [MODEL] --tasks ...`: lm_eval's `run`, step for step."""
    from lm_eval.utils import handle_non_serializable, make_table

    from fusebench.evaluate.harness import run_lm_eval, save

    cfg = config_from_args(args)
    suites = [s for s in (args.suite or "").split(",") if s]
    if suites:  # `--suite` beside `--tasks`: more group names
        cfg.tasks = [*([cfg.tasks] if isinstance(cfg.tasks, str) else cfg.tasks or []), *suites]
    from fusebench.evaluate.cli import _corpora

    run = run_lm_eval(cfg, args.model, data=data, workdir=args.workdir, corpora=_corpora(args.corpus),
                      dtype=args.dtype, max_length=args.max_length, truncate_long_prompts=args.truncate_long_prompts)
    results = run.results
    if results is None:  # not the main process
        return 0
    if cfg.show_config:
        print(json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False))
    loggers = _loggers(cfg)
    for logger in loggers:
        try:  # as lm_eval: a failed upload does not fail the evaluation
            logger.post_init(results)
            logger.log_eval_result()
            if cfg.log_samples:
                logger.log_eval_samples(run.samples)
        except Exception as err:  # noqa: BLE001
            print(f"[fusebench eval] logging to {type(logger).__name__} failed: {err}", file=sys.stderr)
    save(run, cfg)
    print(header_line(cfg, results))
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    for logger in loggers:
        getattr(logger, "run", logger).finish()
    return 0


def header_line(cfg, results: dict) -> str:
    """lm_eval's line above the table: `hf ({'pretrained': ...}), gen_kwargs: (...), limit: ..., ...`."""
    batch_sizes = ",".join(map(str, results["config"]["batch_sizes"]))
    model_args = {k: v for k, v in cfg.model_args.items() if k != "trust_remote_code"}  # lm_eval drops it here
    return (f"{cfg.model} ({model_args}), gen_kwargs: ({cfg.gen_kwargs}), limit: {cfg.limit}, num_fewshot: "
            f"{cfg.num_fewshot}, batch_size: {cfg.batch_size}{f' ({batch_sizes})' if batch_sizes else ''}")


def _loggers(cfg) -> list:
    """lm_eval's W&B and Trackio loggers, when their flags are given (their packages are then needed)."""
    out = []
    try:
        if cfg.wandb_args:
            from lm_eval.loggers import WandbLogger

            out.append(WandbLogger(cfg.wandb_args, cfg.wandb_config_args))
        if cfg.trackio_args:
            from lm_eval.loggers import TrackioLogger

            out.append(TrackioLogger(cfg.trackio_args))
    except ImportError as err:
        raise FusebenchError(f"--wandb_args / --trackio_args need their package ({err}); pip install it, or drop "
                             "the flag.") from err
    return out
