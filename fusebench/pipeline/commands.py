"""`fusebench run` and `fusebench plan`.

Everything a run computes lives under its workdir (default `runs/<recipe name>/`): `cache/` (one folder per stage)
and `logs/` (one log file per invocation). Its evaluations are then published to the results store (default
`results/<recipe name>/`, append-only: a finished run is never rewritten) and the reports re-rendered (`reports/`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.pipeline.graph import build_stages
from fusebench.pipeline.recipe import load_recipe
from fusebench.pipeline.runner import Runner

log = logging.getLogger("fusebench")


def _prepare(args) -> tuple:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    recipe = load_recipe(args.recipe, args.overrides)
    workdir = Path(args.workdir or Path("runs") / recipe.name)
    return recipe, workdir, Runner(build_stages(recipe), workdir)


def _setup_logging(workdir: Path) -> Path:
    logs = workdir / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        probe = logs / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise FusebenchError(f"cannot write to the workdir {workdir}: {err.strerror}. Choose a writable directory "
                             "with --workdir DIR.") from None
    path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log.setLevel(logging.INFO)
    log.handlers.clear()
    for handler in (logging.FileHandler(path), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    return path


def plan(args) -> int:
    recipe, workdir, runner = _prepare(args)
    print(f"recipe {recipe.name}: {len(runner.order)} stages, workdir {workdir}")
    for sid, status, path in runner.plan():
        inputs = ", ".join(runner.stages[sid].inputs) or "-"
        print(f"  {'✓' if status == 'cached' else '·'} {sid:<60} {status:<10} <- {inputs}")
    from fusebench.pipeline.estimate import describe_plan

    for line in describe_plan(recipe):
        print(line)
    return 0


def run(args) -> int:
    recipe, workdir, runner = _prepare(args)
    log_path = _setup_logging(workdir)
    log.info("recipe %s -> %s (log: %s)", recipe.name, workdir, log_path)
    start = time.time()
    done = runner.run(args.only)
    results = Path(getattr(args, "results", None) or "results")
    published = publish_results(recipe.name, runner, done, results)
    if published and recipe.report:
        from fusebench.report.api import render_reports

        render_reports(results, Path(getattr(args, "reports", None) or "reports"))
    log.info("finished %d stages in %.1fs", len(done), time.time() - start)
    return 0


def publish_results(run_id: str, runner: Runner, done: dict[str, Path], results: Path) -> bool:
    """Copy each finished evaluation into `results/<run_id>/<model>/`; what is already there is left untouched."""
    copied = False
    for sid, path in done.items():
        if not sid.startswith("eval:"):
            continue
        for f in path.rglob("*.json"):
            if f.name == ".stage.json":
                continue
            dest = results / f.relative_to(path)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
                copied = True
    return copied
