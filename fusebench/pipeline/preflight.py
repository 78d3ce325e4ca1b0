"""Preflight: before a run does any work (and in `fusebench plan`), check that every model, tokenizer and dataset the
recipe names can be read, and list what is missing with the command that fetches it.

Offline (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1) readable means in the local caches:
- a hub model at its `revision`: a snapshot in the hub cache with `config.json` and weights
  (fetch: `hf download ID --revision R`);
- a pretrained tokenizer named by hub id: its tokenizer files in the hub cache (`hf download ID`);
- a hub corpus at its `revision`: a snapshot in the hub cache, which fusebench.data.corpora reads
  (`hf download --repo-type dataset ID --revision R`), or a copy `datasets` prepared;
- the hub datasets of evaluation suites with `evaluate.data: hub`: the copy `datasets` prepared, since that is what
  lm-eval's `load_dataset` reads offline (it refuses a bare hub-cache snapshot); fetched by one `load_dataset`
  call online, at the revision a task pins.
Local paths (model directories, GGUF files, corpus files) are checked online and offline. Online, hub items are not
checked: the stages fetch them, and asking the hub about each would cost a request per item for little.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.pipeline.recipe import CorpusSpec, ModelSpec, Recipe

_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.gguf")


@dataclass(frozen=True)
class Missing:
    what: str    # what the recipe names, e.g. "model target: meta-llama/Llama-2-7b-hf @ main"
    why: str
    fetch: str   # the command that fetches it (or what to fix)


def offline() -> bool:
    import huggingface_hub.constants as hub

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE"))
    return "1" in flags or bool(hub.HF_HUB_OFFLINE)


def _quietly(fn, *args):
    """fn(*args) with `datasets`' logging held at errors (its cache lookup logs every copy it finds)."""
    from datasets.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        return fn(*args)
    finally:
        dlog.set_verbosity(level)


def _rev(revision: str | None) -> str:
    return f" --revision {revision}" if revision else ""


def _model(name: str, m: ModelSpec) -> list[Missing]:
    from fusebench.models.hub import cached_snapshot, is_hub_id

    if m.gguf and not m.gguf.startswith("package:") and not Path(m.gguf).expanduser().is_file():
        return [Missing(f"model {name}: {m.gguf}", "the GGUF file does not exist", "fix `gguf:` in the recipe")]
    if not m.path:
        return []
    if not is_hub_id(m.path):
        ok = Path(m.path).expanduser().is_dir()
        return [] if ok else [Missing(f"model {name}: {m.path}", "not a directory", "fix `path:` in the recipe")]
    if not offline():
        return []
    snap = cached_snapshot(m.path, m.revision)
    if snap is None:
        why = "not in the Hugging Face cache" + (f" at revision {m.revision}" if m.revision else "")
    elif not (snap / "config.json").is_file() or not any(f for p in _WEIGHTS for f in snap.glob(p)):
        why = f"its cached snapshot {snap} lacks config.json or weights"
    else:
        return []
    return [Missing(f"model {name}: {m.path} @ {m.revision or 'main'}", why, f"hf download {m.path}{_rev(m.revision)}")]


def _tokenizer(name: str, path: str) -> list[Missing]:
    from fusebench.models.hub import TOKENIZER_FILES, cached_snapshot, is_hub_id

    if not is_hub_id(path):
        ok = Path(path).expanduser().is_dir()
        return [] if ok else [Missing(f"tokenizer {name}: {path}", "not a directory", "fix `path:` in the recipe")]
    if not offline():
        return []
    snap = cached_snapshot(path, None, TOKENIZER_FILES)
    if snap is not None and (any(snap.glob("tokenizer*")) or (snap / "vocab.json").is_file()):
        return []
    return [Missing(f"tokenizer {name}: {path}", "not in the Hugging Face cache", f"hf download {path}")]


def _corpus(name: str, c: CorpusSpec) -> list[Missing]:
    from fusebench.data.corpora import download_command, hub_dataset_snapshot, matching_files

    if c.kind == "files":
        absent = [p for p in c.files if not matching_files(p) or not all(m.exists() for m in matching_files(p))]
        return [Missing(f"corpus {name}: {p}", "no such file", "fix `files:` in the recipe") for p in absent]
    if c.kind != "hub" or not offline() or hub_dataset_snapshot(c.path, c.revision) is not None:
        return []
    from fusebench.evaluate.revisions import cached_revision

    if c.revision is None and _quietly(cached_revision, c.path, c.name) is not None:
        return []  # a copy `datasets` prepared online (no pin to compare with)
    return [Missing(f"corpus {name}: dataset {c.path} @ {c.revision or 'main'}", "not in the Hugging Face cache",
                    download_command(c.path, c.revision))]


def _eval_datasets(recipe: Recipe) -> list[Missing]:
    """The hub datasets (with config and pinned revision) of the suites that read hub data, from their task YAMLs."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from fusebench.evaluate.revisions import cached_revision
    from fusebench.evaluate.suites import SuiteContext, parse_suites, plan_suite, task_yaml_paths

    spec = recipe.evaluate
    # perplexity scores the recipe's own corpora (checked as corpora), never a hub dataset
    wanted = {s: only for s, only in parse_suites(spec.suites).items()
              if spec.data_for(s) == "hub" and s != "perplexity"}
    if not wanted or not offline():
        return []
    found: dict[tuple, str] = {}
    with tempfile.TemporaryDirectory() as tmp:  # the suites write their task YAMLs; only their names are kept
        ctx = SuiteContext(Path(tmp), online=True)
        for suite, only in wanted.items():
            plan = plan_suite(suite, ctx, only, refuse_offline_hub=False)
            for path in task_yaml_paths(plan).values():
                config = load_yaml(path, resolve_func=False)
                dataset = config.get("dataset_path") or ""
                if "/" in dataset:
                    pin = (config.get("dataset_kwargs") or {}).get("revision")
                    found.setdefault((dataset, config.get("dataset_name"), pin), suite)
    absent: dict[tuple, list] = {}  # (dataset, pin, suite) -> its configs not prepared (or of another commit)
    for (dataset, config, pin), suite in sorted(found.items(), key=str):
        have = _quietly(cached_revision, dataset, config)
        if have is None or (pin and len(str(pin)) == 40 and have != pin):
            absent.setdefault((dataset, pin, suite), []).append(config)
    out = []
    for (dataset, pin, suite), configs in absent.items():
        rev = f", revision={pin!r}" if pin else ""
        fetch = (f"datasets.load_dataset({dataset!r}, {configs[0]!r}{rev})" if len(configs) == 1 else
                 f"[datasets.load_dataset({dataset!r}, c{rev}) for c in {tuple(configs)!r}]")
        names = ", ".join(c or "default" for c in configs)
        out.append(Missing(f"evaluation data {dataset} ({names}) @ {pin or 'main'}, suite {suite}",
                           "no copy prepared by `datasets` at that revision",
                           f"python -c \"import datasets; {fetch}\""))
    return out


def check(recipe: Recipe) -> list[Missing]:
    """Everything the recipe names that this machine cannot read now."""
    out: list[Missing] = []
    for name, m in recipe.models.items():
        out += _model(name, m)
    for name, t in recipe.tokenizers.items():
        if t.kind == "pretrained":
            out += _tokenizer(name, t.path)
    for name, c in recipe.corpora.items():
        out += _corpus(name, c)
    if recipe.evaluate is not None:
        out += _eval_datasets(recipe)
    return out


def describe(missing: list[Missing]) -> list[str]:
    """Lines for `fusebench plan`."""
    mode = "offline: hub items must be in the local caches" if offline() else \
        "online: hub items are fetched by the stages, local paths checked"
    if not missing:
        return ["", f"preflight ({mode}): every model, tokenizer and dataset is readable."]
    lines = ["", f"preflight ({mode}): {len(missing)} missing; fetch them before `fusebench run`:"]
    for m in missing:
        lines += [f"  ✗ {m.what} ({m.why})", f"      {m.fetch}"]
    return lines


def require(recipe: Recipe) -> None:
    """Raise (exit 2) before any work when something the recipe names cannot be read."""
    missing = check(recipe)
    if missing:
        raise FusebenchError("this run cannot start: " + "; ".join(f"{m.what} ({m.why}): {m.fetch}" for m in missing)
                             + ". Fetch each with the command given (online), then rerun; `fusebench plan RECIPE` "
                             "lists them too.")
