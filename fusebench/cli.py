"""The `fusebench` command: a thin dispatcher.

Each subcommand only parses arguments and hands them to the module that does the work, imported lazily so
`fusebench --help` stays fast and optional heavy dependencies are only imported when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fusebench.errors import FusebenchError

# subcommand -> "module:function"; the function takes the parsed argparse.Namespace and returns an exit code.
COMMANDS = {
    "run": "fusebench.pipeline.commands:run",
    "plan": "fusebench.pipeline.commands:plan",
    "align": "fusebench.align.cli:main",
    "eval": "fusebench.evaluate.cli:main",
    "tasks": "fusebench.evaluate.export:main",
    "report": "fusebench.report.cli:main",
    "leaderboard": "fusebench.report.leaderboard:main",
    "bench": "fusebench.bench:main",
    "verify": "fusebench.pipeline.integrity:main",
}


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path to a recipe YAML (e.g. recipes/tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override recipe values, e.g. train.lr=2e-5 seeds=[0,1]")
    p.add_argument("--workdir", default=None,
                   help="where everything the run writes lives (default: runs/<recipe name>)")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reads flags only as spelled: with argparse's default abbreviations `--model vllm`
    was taken as `--model_args vllm`. Subparsers are built from this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from fusebench import __version__

    parser = _Parser(prog="fusebench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fusebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage of a recipe (cached, resumable)")
    _recipe_args(p)
    p.add_argument("--only", default=None, help="run only the stages whose id starts with this prefix (and what they need)")
    p.add_argument("--publish", action="store_true",
                   help="write into the repo's results/ and reports/ (default: WORKDIR/results, WORKDIR/reports)")
    p.add_argument("--results", default=None, help="results store for the run's evaluations (overrides --publish)")
    p.add_argument("--reports", default=None, help="where the reports are rendered (overrides --publish)")

    p = sub.add_parser("plan", help="print the stage graph: what is cached and what would run (downloads nothing)")
    _recipe_args(p)
    p.add_argument("--accelerate-config", default=None, metavar="FILE",
                   help="also check the accelerate config a launch will use (e.g. DeepSpeed installed for it)")

    p = sub.add_parser("align", help="align two tokenizations of one text and print the path and its cost")
    p.add_argument("--source", required=True, help="source tokenizer: a local directory or hub id")
    p.add_argument("--target", required=True, help="target tokenizer: a local directory or hub id")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", help="the text to tokenize")
    g.add_argument("--file", help="a file holding the text")
    p.add_argument("--aligner", default="dtw", help="dtw (default), offsets, or statistics (DTW's path here)")
    p.add_argument("--vocab-map", default=None, help="also build this vocab map (em, mined, statistics: counted "
                   "over the text) and report its coverage and agreement on the text")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    p = sub.add_parser("eval", help="evaluate a model through lm-eval: fusebench suites or any lm-eval task, "
                       "with lm_eval's flags")
    from fusebench.evaluate.cli import add_arguments  # argparse only: cheap

    add_arguments(p)

    p = sub.add_parser("tasks", help="export fusebench's packaged offline tasks for stock lm_eval "
                       "(lm_eval --include_path DIR --tasks arc_easy ...)")
    p.add_argument("action", choices=["export"], help="export: render the tasks and their data into DIR")
    p.add_argument("dir", help="the folder to write (then: lm_eval --include_path DIR)")
    p.add_argument("--suite", default=None, help="comma-separated suites, suite:task for one task "
                   "(default: commonsense,lambada,bbh,bbh_mc)")

    p = sub.add_parser("report", help="render the paper's tables and plots from stored results")
    p.add_argument("--results", default="results", help="results store (default: results/)")
    p.add_argument("--out", default="reports", help="output directory (default: reports/)")
    p.add_argument("--format", default="md,latex,html,csv", help="comma-separated: md,latex,html,csv")
    p.add_argument("--stderr", action="store_true", help="(kept for old scripts: ± is always shown now)")

    p = sub.add_parser("leaderboard", help="rank every evaluated model; `leaderboard add MODEL` adds one")
    p.add_argument("action", nargs="?", choices=["show", "add", "sync"], default="show",
                   help="show the board; add MODEL (scored on the board's data); sync: enter published runs")
    p.add_argument("--board", default=None, help="directory holding board.yaml (default: results/leaderboard)")
    p.add_argument("model", nargs="?", help="with `add`: a model directory, a hub id, or a GGUF file as "
                   "gguf:PATH or gguf:package:NAME (a registry package holding one)")
    p.add_argument("--name", default=None, help="with `add`: the row's name")
    p.add_argument("--reference", action="store_true", help="with `add`: list the model beside the ranking, not in "
                   "it (a public model that may have been trained on the board's texts)")
    p.add_argument("--suite", default=None, help="comma-separated suites to rank and show (default: all of the "
                   "board's)")
    p.add_argument("--results", default="results", help="with `sync`: the results store whose runs are entered "
                   "(default: results/)")
    p.add_argument("--out", default="reports", help="where the rendered board goes: leaderboard.md/.html/.csv/.png"
                   "/.svg (default: reports/)")
    p.add_argument("--workdir", default=None, help="with `add`: cache for the rebuilt corpora, converted models and "
                   "evaluations (default: runs/leaderboard)")
    p.add_argument("--limit", type=int, default=None, help="show only the first N ranked entries (reference models "
                   "are always listed)")

    p = sub.add_parser("verify", help="check every finished stage's files against the checksums recorded when it finished")
    p.add_argument("workdir", nargs="?", default="runs", help="a run's workdir, a parent of several, or one store (default: runs/)")
    p.add_argument("--adopt", action="store_true", help="record checksums for stages finished before they were recorded")

    p = sub.add_parser("bench", help="speed and memory benchmarks, as ratios against baselines measured in the same run")
    p.add_argument("--json", action="store_true", help="print one JSON object (keys documented in bench/README.md)")
    p.add_argument("--quick", action="store_true", help="smaller inputs, for smoke tests")
    return parser


def main(argv: list[str] | None = None) -> int:
    from fusebench.launch import die_with_launcher

    die_with_launcher()  # under accelerate launch / torchrun: a worker must not outlive its launcher
    args = build_parser().parse_args(argv)
    module_name, func_name = COMMANDS[args.command].split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except FusebenchError as err:
        print(f"fusebench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fusebench: interrupted; finished stages are kept and the run resumes where it stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
