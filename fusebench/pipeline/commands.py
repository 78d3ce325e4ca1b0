"""`fusebench run` and `fusebench plan`.

Everything a run computes lives under its workdir (default `runs/<recipe name>/`): `cache/` (one folder per stage)
and `logs/` (one log file per invocation). Its evaluations then go to a results store (`results/<recipe>-<hash>/`,
append-only: a finished run is never rewritten) and the reports are rendered from that store. Both live in the
workdir (`<workdir>/results`, `<workdir>/reports`) unless publishing is asked for (`--publish` or `publish: true`
in the recipe): only then does a run write into the repository's `results/` and `reports/`. Explicit `--results` /
`--reports` paths win over both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from fusebench.checksums import SEAL, seal
from fusebench.errors import FusebenchError
from fusebench.launch import describe as describe_launch
from fusebench.launch import end_process_group, log_launch, preflight_backend
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
    # Opening this process's own log file is the write test: every rank of a launch runs this at once, so a shared
    # probe file would let one rank unlink another's between its write and its unlink.
    logs = workdir / "logs"
    path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path)
    except OSError as err:
        raise FusebenchError(f"cannot write to the workdir {workdir}: {err.strerror}. Choose a writable directory "
                             "with --workdir DIR.") from None
    log.setLevel(logging.INFO)
    log.propagate = False  # libraries configure the root logger; keep our lines single
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()
    for handler in (file_handler, logging.StreamHandler(sys.stderr)):
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    detail = logging.getLogger("fusebench.detail")  # the log file only: loss curves, every library warning
    detail.handlers[:] = [file_handler]
    detail.propagate = False
    _quiet_libraries(file_handler)
    return path


class _Once(logging.Filter):
    """Lets each distinct message through once: lm-eval warns the same thing for every evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _quiet_libraries(file_handler: logging.Handler) -> None:
    """Library warnings: every one in the log file, each distinct one once on the console. Library progress bars
    (lm-eval's per-batch and per-task bars, datasets, transformers' weight loading) off: a stage shows at most its
    own bar (training, extraction, alignment), which passes `disable=` explicitly and so is unaffected."""
    import functools

    import tqdm.std
    import transformers

    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_Once())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "fusebench", False)]
    for handler in (file_handler, console):
        handler.fusebench = True
    console.setLevel(logging.WARNING)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(min(root.level or logging.WARNING, logging.WARNING))
    logging.captureWarnings(True)
    transformers.utils.logging.disable_default_handler()   # to the root logger, through the filter above
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.disable_progress_bar()
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["FUSEBENCH_QUIET_BARS"] = "1"             # read by evaluate/runner.py for lm-eval's own bars
    if not getattr(tqdm.std.tqdm, "_fusebench_quiet", False):
        tqdm.std.tqdm.__init__ = functools.partialmethod(tqdm.std.tqdm.__init__, disable=True)  # explicit wins
        tqdm.std.tqdm._fusebench_quiet = True


def plan(args) -> int:
    recipe, workdir, runner = _prepare(args)
    if getattr(args, "accelerate_config", None):  # before the launch: the backend it names must be installed
        from fusebench.launch import check_accelerate_config

        print(f"accelerate config {args.accelerate_config}: {check_accelerate_config(args.accelerate_config)}, "
              "its backend imports here")
    print(f"recipe {recipe.name}: {len(runner.order)} stages, workdir {workdir}")
    if recipe.train:
        print(train_override_line(recipe))
    for sid, status, path in runner.plan():
        inputs = ", ".join(runner.stages[sid].inputs) or "-"
        print(f"  {'✓' if status == 'cached' else '·'} {sid:<60} {status:<10} <- {inputs}")
    from fusebench.pipeline.estimate import describe_plan

    for line in describe_plan(recipe):
        print(line)
    from fusebench.pipeline import preflight

    for line in preflight.describe(preflight.check(recipe)):
        print(line)
    return 0


def train_override_line(recipe) -> str:
    """What a top-level `train.*` (e.g. `train.lr=2e-5` on the command line) changed: every trained model."""
    trained = [name for name, m in recipe.models.items() if m.train is not None]
    values = ", ".join(f"{k}={v}" for k, v in recipe.train.items())
    return f"train.* set for every trained model ({', '.join(trained) or 'none'}): {values}"


def run(args) -> int:
    recipe, workdir, runner = _prepare(args)
    if any(status != "cached" for _, status, _ in runner.plan()):
        from fusebench.pipeline import preflight

        preflight.require(recipe)  # before any work: nothing found missing at stage 16 of 24
    log_path = _setup_logging(workdir)
    log.info("recipe %s -> %s (log: %s)", recipe.name, workdir, log_path)
    preflight_backend()
    log_launch(describe_launch())
    if recipe.train:
        log.info(train_override_line(recipe))
    start = time.time()
    done = runner.run(args.only)
    end_process_group()                         # the stages' collectives are done; publishing needs none
    if int(os.environ.get("RANK", "0")) != 0:  # under a launch the main process publishes; others would race it
        return 0
    link_models(workdir, done)
    results, out = output_dirs(args, recipe, workdir)
    published = publish_results(recipe, runner, done, results)
    if published and recipe.report:
        from fusebench.report.cli import report

        report(results, out, ["md", "latex", "html", "csv"])
        log.info("reports written to %s (index: %s)", out, out / "index.md")
    log.info("finished %d stages in %.1fs", len(done), time.time() - start)
    return 0


def link_models(workdir: Path, done: dict[str, Path]) -> Path | None:
    """Point `<workdir>/models/<name>` at each finished model's cached artifact and say so in the log.

    The cache dir's name changes with every key (`target-<key16>`); the link's does not, so scripts and
    `fusebench eval runs/<recipe>/models/<name>` keep working across runs. Links are relative (the workdir can
    move) and replaced atomically; a model stage id `model:<name>[.s<seed>]` gives the link's name."""
    models = {sid.split(":", 1)[1]: path for sid, path in done.items() if sid.startswith("model:")}
    if not models:
        return None
    links = workdir / "models"
    links.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(models.items()):
        tmp = links / f".{name}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(path, links), tmp)
        try:
            os.replace(tmp, links / name)
        except OSError as err:  # e.g. a real directory of that name: leave it, and say why
            tmp.unlink(missing_ok=True)
            log.warning("cannot link %s to %s: %s", links / name, path, err.strerror)
    log.info("models linked under %s: %s (each points at its cached artifact)", links, ", ".join(sorted(models)))
    return links


def output_dirs(args, recipe, workdir: Path) -> tuple[Path, Path]:
    """(results store, reports dir): the repo's only when publishing is asked for; explicit paths win."""
    publish = bool(getattr(args, "publish", False) or recipe.publish)
    base = Path(".") if publish else workdir
    return (Path(getattr(args, "results", None) or base / "results"),
            Path(getattr(args, "reports", None) or base / "reports"))


def publish_results(recipe, runner: Runner, done: dict[str, Path], results: Path) -> Path | None:
    """Copy the run's evaluations into `results/<recipe>-<hash>/<model>/` and return that directory.

    The hash covers every evaluation's stage key, so a changed recipe publishes a new run beside the old ones (the
    store is append-only) and re-running an unchanged recipe finds its run already there. `run.json` names each
    model's role (target, source, baseline, fused, ...) and how it was made: the report layer lays tables out like
    the paper's from it (relative change against the target)."""
    evals = {sid: path for sid, path in done.items() if sid.startswith("eval:")}
    if not evals:
        return None
    digest = hashlib.sha256("".join(sorted(runner.stages[s].key for s in evals)).encode()).hexdigest()[:8]
    run_dir = results / f"{recipe.name}-{digest}"
    if run_dir.exists():
        from fusebench.report.store import check_run

        check_run(run_dir)  # what is already published is what the report will read: never a changed number
        if json.loads((run_dir / "run.json").read_text()).get("stages") != {s: runner.stages[s].key for s in evals}:
            raise FusebenchError(f"{run_dir} holds the results of other evaluations than this run's (its run.json "
                                 "names other stage keys): it was renamed or replaced. Move it out of "
                                 f"{results} and run again to publish this run's results there.")
        return run_dir
    staging = results / f".{run_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for sid, path in evals.items():
        seed = runner.stages[sid].config.get("seed")     # set for seed-dependent models only (graph.py)
        for f in [*path.rglob("*.json"), *path.rglob("*.items.json.gz")]:
            if f.name not in (".stage.json", SEAL):
                # evaluate_model writes <recipe>/<model>/<suite>(.manifest|.items).json(.gz), under the name of the
                # recipe whose run computed the stage: another recipe including this one may have (same stage key)
                rel = Path(*f.relative_to(path).parts[1:])
                dest = staging / (rel if seed is None else rel.parent / f"seed-{seed}" / rel.name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
                if seed is not None and f.name.endswith(".manifest.json"):   # the results carry their seed
                    manifest = json.loads(dest.read_text())
                    manifest["training_seed"] = seed
                    dest.write_text(json.dumps(manifest, indent=2))
    pairwise = {member: group for group, members in recipe.pairwise_groups.items() for member in members}
    roles = {name: {"role": m.role, "kind": m.kind, "init": m.init, "teachers": m.teachers,
                    "fusion": m.fusion.model_dump(by_alias=True) if m.fusion else None,
                    "pairwise": pairwise.get(name), "merge": _merge_record(m.merge)}
             for name, m in recipe.models.items()}
    target = next((n for n, m in recipe.models.items() if m.role == "target"), None)
    from fusebench.pipeline.graph import seed_dependent

    (staging / "run.json").write_text(json.dumps({"recipe": recipe.name, "target": target, "models": roles,
                                                  "seeds": recipe.seeds,
                                                  "seed_dependent": sorted(seed_dependent(recipe)) if recipe.seeds
                                                  else [],
                                                  "stages": {s: runner.stages[s].key for s in evals}}, indent=2))
    for name, record in _training_records(done).items():  # how fusion chose, and what alignment delivered
        (staging / name).write_text(json.dumps(record, indent=2, sort_keys=True))
    from fusebench.report.knowledge import write_knowledge

    write_knowledge(staging, roles, target)     # each source's / teacher's gap to the target, printed and kept
    clusters = _clusters(recipe, done)
    if clusters:                                # which source document each test passage was cut from
        (staging / "clusters.json").write_text(json.dumps(clusters, indent=1))
    seal(staging)  # exactly these files, checked before anything reads them (fusebench/checksums.py)
    staging.rename(run_dir)  # appears whole or not at all
    log.info("results published to %s", run_dir)
    return run_dir


def _clusters(recipe, done: dict[str, Path]) -> dict[str, dict]:
    """lm-eval task (`ppl_<corpus>`, evaluate/suites.py) -> the source document of each test document, for the
    corpora scored in passages (fusebench/data/provenance.py); the report clusters their intervals by it."""
    from fusebench.data.provenance import corpus_clusters

    out = {}
    for sid, path in sorted(done.items()):
        kind, _, name = sid.partition(":")
        spec = recipe.corpora.get(name) if kind == "corpus" else None
        record = corpus_clusters(spec, path) if spec is not None else None
        if record is not None:
            out[f"ppl_{name}"] = record
    return out


def _merge_record(merge) -> dict | None:
    """A merge's method (mergekit's name for a mergekit block), members and base, for the report's FuseChat table."""
    if merge is None:
        return None
    method = merge.mergekit["merge_method"] if merge.mergekit else merge.method
    return {"method": method, "models": merge.models, "base": merge.base}


def _training_records(done: dict[str, Path]) -> dict[str, dict]:
    """What the published results need beside the scores to be read: `fusion_choices.json` (per fused / KD model and
    seed, how often each candidate was chosen: MinCE's picks, AvgCE's summed weights) and `alignment.json` (per
    align stage, the aligned store's coverage and precision and how many sequences a source was cut short on)."""
    choices: dict[str, dict] = {}
    alignment: dict[str, dict] = {}
    for sid, path in sorted(done.items()):
        kind, _, rest = sid.partition(":")
        if kind == "model" and (path / "fusion_choices.json").exists():
            name, _, seed = rest.partition(".s")     # model:<name>[.s<seed>] (graph.py)
            choices.setdefault(name, {})[f"seed-{seed}" if seed else "shared"] = \
                json.loads((path / "fusion_choices.json").read_text())
        elif kind == "align" and (path / "store" / "meta.json").exists():
            meta = json.loads((path / "store" / "meta.json").read_text())
            alignment[rest] = {"quality": meta.get("quality"), "truncated_sources": meta.get("truncated_sources"),
                               "aligner": meta.get("aligner")}
    return {n: r for n, r in (("fusion_choices.json", choices), ("alignment.json", alignment)) if r}
