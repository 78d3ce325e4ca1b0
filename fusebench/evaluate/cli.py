"""`fusebench eval MODEL --suite ...`: evaluate one model and print its scores as a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusebench.errors import FusebenchError


def _corpora(specs: list[str] | None) -> dict[str, Path]:
    corpora = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise FusebenchError(f"--corpus {spec!r} is not NAME=DIR (e.g. --corpus legal=runs/tiny/corpora/legal).")
        corpora[name] = Path(path)
    return corpora


def main(args: argparse.Namespace) -> int:
    from fusebench.evaluate.api import evaluate_model

    result = evaluate_model(
        args.model, args.suite, name=args.name, limit=args.limit, workdir=args.workdir, results_dir=args.results,
        run_id=getattr(args, "run_id", None), corpora=_corpora(getattr(args, "corpus", None)),
        batch_size=args.batch_size, device=args.device, online=getattr(args, "online", False),
        backend=getattr(args, "backend", "hf"), dtype=getattr(args, "dtype", None))
    print(f"{'task':<42} {'metric':<18} {'value':>9} {'stderr':>9}")
    for s in result.scores:
        stderr = f"{s.stderr:9.4f}" if s.stderr is not None else f"{'-':>9}"
        print(f"{s.task:<42} {s.metric:<18} {s.value:9.4f} {stderr}")
    for r in result.suites:
        print(f"wrote {r.results_path} and {r.manifest_path.name}")
    return 0
