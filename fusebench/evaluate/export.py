"""`fusebench tasks export DIR`: fusebench's packaged offline tasks, ready for stock lm_eval.

Each suite is rendered as `fusebench eval --tasks` renders it (lm-eval's task names, its YAMLs `include:`d, only the
data source changed to the packaged copy; BBH under its own `_maxgen256` names), into DIR/tasks/<suite>/ with its
data in DIR/data/. lm-eval indexes an include path recursively, so afterwards
`lm_eval --include_path DIR --tasks arc_easy ...` runs them offline, under names that take precedence over lm-eval's
hub tasks of the same name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusebench.evaluate.suites import SuiteContext, parse_suites, plan_suite

# the suites whose data fusebench packages (perplexity reads the user's corpora)
EXPORTED = ("commonsense", "lambada", "bbh", "bbh_mc")


def export_tasks(out: str | Path, suites: str | list[str] = EXPORTED) -> dict[str, list[str]]:
    """Render `suites` (names, suite:task allowed) with their packaged data under `out`; suite -> task names."""
    ctx = SuiteContext(Path(out).resolve(), online=False, original_names=True)
    return {suite: list(plan_suite(suite, ctx, only).tasks.values()) for suite, only in parse_suites(suites).items()}


def main(args: argparse.Namespace) -> int:
    exported = export_tasks(args.dir, args.suite or list(EXPORTED))
    out = Path(args.dir).resolve()
    for suite, tasks in exported.items():
        print(f"{suite}: {' '.join(tasks)}")
    first = next(iter(exported.values()))[0]
    print(f"\nrun them with stock lm-eval:\n  lm_eval --include_path {out} --tasks {first} --model hf "
          "--model_args pretrained=MODEL")
    return 0
