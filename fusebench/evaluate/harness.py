"""`fusebench eval MODEL --tasks ...`: lm-eval's own command line, run on a model fusebench loads.

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


@dataclass
class Resolved:
    """The lm-eval task names to run, the folders lm-eval must index, and the packaged files read."""

    tasks: list[str] = field(default_factory=list)
    include_paths: list[Path] = field(default_factory=list)
    data: dict[str, od.DataFile] = field(default_factory=dict)  # lm-eval task -> packaged file
    builtin: list[str] = field(default_factory=list)            # names left to lm-eval's own index
    revisions: dict[str, str] = field(default_factory=dict)     # lm-eval task -> revision of the pinned hub data

    def add_plan(self, plan) -> None:
        for benchmark, task in plan.tasks.items():
            if task not in self.tasks:
                self.tasks.append(task)
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


def parse_seeds(value: str | int | None) -> tuple[int | None, ...]:
    """lm-eval's --seed: one number for python/numpy/torch/fewshot, or four comma-separated ("None" skips one)."""
    parts = [p.strip() for p in str(1234 if value is None else value).split(",")]
    if len(parts) == 1:
        parts *= 4
    try:
        if len(parts) != 4:
            raise ValueError
        return tuple(None if p == "None" else int(p) for p in parts)
    except ValueError:
        raise FusebenchError(f"--seed {value!r}: give one integer or four (python,numpy,torch,fewshot), "
                             "e.g. --seed 0,1234,1234,1234.") from None


def split_model_args(model_args: str | dict | None) -> tuple[dict, dict]:
    """(what fusebench's loader takes, what goes to lm-eval's model class) from lm-eval's k=v,k=v string."""
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(model_args) if isinstance(model_args, str) else dict(model_args or {})
    return {k: v for k, v in args.items() if k in LOADER_KEYS}, {k: v for k, v in args.items() if k not in LOADER_KEYS}


def evaluate_tasks(model: str | Path, tasks: list[str], *, data: str = "packaged", num_fewshot: int | None = None,
                   batch_size: int | str = 8, limit: int | float | None = None, model_args: str | dict | None = None,
                   gen_kwargs: str | dict | None = None, apply_chat_template: bool | str = False,
                   seed: str | int | None = None, include_path: list[str] | None = None, log_samples: bool = False,
                   output_path: str | Path | None = None, workdir: str | Path | None = None,
                   corpora: dict[str, Path] | None = None, device: str | None = None, dtype=None,
                   backend: str = "hf", max_length: int | None = None, truncate_long_prompts: bool = False) -> dict:
    """Run lm-eval on `model` as `lm_eval --model hf --model_args pretrained=MODEL ...` would, with fusebench's
    model loading, packaged data and prompt-length check; write lm-eval's layout + a manifest under output_path."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from fusebench.evaluate.manifest import weights_sha256
    from fusebench.evaluate.runner import build_lm

    if data not in ("hub", "packaged"):
        raise FusebenchError(f"--data {data!r}: choose hub (the benchmarks' own datasets) or packaged (offline).")
    if not tasks:
        raise FusebenchError("no task given: --tasks takes lm-eval task or group names (arc_easy, mmlu, ...) and "
                             f"fusebench suites ({', '.join(SUITES)}), comma-separated.")
    loader, lm_kwargs = split_model_args(model_args)
    seeds = parse_seeds(seed)
    ctx = SuiteContext(Path(workdir or "runs/eval"), data == "hub", {k: Path(v) for k, v in (corpora or {}).items()},
                       original_names=True, model=model)
    resolved = resolve_tasks(tasks, ctx)
    extra = [Path(p) for spec in include_path or [] for p in str(spec).split(",") if p]
    manager = TaskManager(include_path=[str(p) for p in [*resolved.include_paths, *extra]] or None,
                          include_defaults=bool(resolved.builtin) or not (resolved.include_paths or extra))
    unknown = [t for t in resolved.builtin if t not in manager.task_index]
    if unknown:
        raise FusebenchError(f"unknown task(s) {', '.join(unknown)}: neither an lm-eval task or group (see "
                             "`lm_eval ls tasks`), a task under --include_path, nor a fusebench suite "
                             f"({', '.join(SUITES)}).")
    from fusebench.evaluate.revisions import check_revisions, index_yaml_paths

    resolved.revisions.update(check_revisions(index_yaml_paths(manager, resolved.builtin)))  # before the model loads
    handle = build_lm(model, backend=loader.get("backend", backend), batch_size=batch_size, device=device or
                      loader.get("device"), dtype=loader.get("dtype", dtype),
                      max_length=int(loader["max_length"]) if "max_length" in loader else max_length,
                      trust_remote_code=str(loader.get("trust_remote_code", False)).lower() == "true",
                      lm_kwargs=lm_kwargs, truncate_long_prompts=truncate_long_prompts)
    tracker = EvaluationTracker(output_path=str(output_path)) if output_path else None
    print(f"[fusebench eval] {len(resolved.tasks)} task(s): {', '.join(resolved.tasks)}", file=sys.stderr, flush=True)
    results = lm_eval.simple_evaluate(
        model=handle.lm, model_args={"pretrained": str(model), **lm_kwargs}, tasks=resolved.tasks,
        task_manager=manager, num_fewshot=num_fewshot, limit=limit, gen_kwargs=gen_kwargs,
        apply_chat_template=apply_chat_template, log_samples=log_samples, evaluation_tracker=tracker,
        random_seed=seeds[0], numpy_random_seed=seeds[1], torch_random_seed=seeds[2], fewshot_random_seed=seeds[3],
        confirm_run_unsafe_code=True)  # generated code only ever runs in fusebench's sandbox
    if tracker is not None:
        samples = results.pop("samples", None) if log_samples else None
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"] if samples else []:
            tracker.save_results_samples(task_name=task, samples=samples[task])
        _write_manifest(tracker, results, model=model, weights=weights_sha256(model), handle=handle,
                        resolved=resolved, data=data, limit=limit, seeds=seeds)
    return results


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
                                       for t in resolved.tasks},
        "dataset_revisions": resolved.revisions,  # pinned hub data: the revision read (fusebench/evaluate/revisions.py)
        "limit": limit, "seeds": dict(zip(("random", "numpy", "torch", "fewshot"), seeds)),
        "prompts_cut": dict(getattr(handle.lm, "fusebench_prompts_cut", {})),
        "packages": package_versions(), "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, out / f"manifest_{tracker.date_id}.json")
