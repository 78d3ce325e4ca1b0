"""An offline BIG-Bench Hard (BBH), rebuilt from the BIG-bench source in BBH's own format.

No registry package ships BBH, but the `bigbench` 1.0.0 sdist on PyPI ships the BIG-bench tasks BBH was drawn from.
For 24 of BBH's 27 tasks we read `benchmark_tasks/<task>/task.json` and rewrite each item the way BBH did: the
question, then "Options:\n(A) ...", target "(A)" (or "- Yes / - No" lists and plain answers where BBH has those).
The other three BBH tasks are programmatic in BIG-bench (task.py), so small seeded generators of ours stand in.
Differences from the real BBH (other items, up to 250 sampled per task, option order as in BIG-bench) are listed
in docs/EVALUATION.md; scores are comparable between models, not with published BBH numbers.

The sdist cannot go through `pip download` (building its metadata fails on a direct-URL dependency), so it is
streamed from PyPI's simple index, checked against the index's sha256, and only the task.json files are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from filelock import FileLock

from fusebench.data.packages import cache_root
from fusebench.errors import FusebenchError
from fusebench.evaluate.offline_data import write_atomic

BIGBENCH_VERSION = "1.0.0"
MAX_ITEMS = 250  # BBH keeps at most 250 items per task
SEED = 0

# BBH task -> (BIG-bench task.json directory, style). Styles: "letters" = "Options:\n(A) x" with target "(A)";
# "dash" = "Options:\n- x" with the option text as target; "free" = the answer string itself.
FROM_BIGBENCH = {
    "causal_judgement": ("causal_judgment", "dash"),
    "date_understanding": ("date_understanding", "letters"),
    "disambiguation_qa": ("disambiguation_qa", "letters"),
    "dyck_languages": ("dyck_languages", "free"),
    "formal_fallacies": ("formal_fallacies_syllogisms_negation", "dash"),
    "geometric_shapes": ("geometric_shapes", "letters"),
    "hyperbaton": ("hyperbaton", "letters"),
    "logical_deduction_five_objects": ("logical_deduction/five_objects", "letters"),
    "logical_deduction_seven_objects": ("logical_deduction/seven_objects", "letters"),
    "logical_deduction_three_objects": ("logical_deduction/three_objects", "letters"),
    "movie_recommendation": ("movie_recommendation", "letters"),
    "navigate": ("navigate", "dash"),
    "object_counting": ("object_counting", "free"),
    "penguins_in_a_table": ("penguins_in_a_table", "letters"),
    "reasoning_about_colored_objects": ("reasoning_about_colored_objects", "letters"),
    "ruin_names": ("ruin_names", "letters"),
    "salient_translation_error_detection": ("salient_translation_error_detection", "letters"),
    "snarks": ("snarks", "letters"),
    "sports_understanding": ("sports_understanding", "free"),
    "temporal_sequences": ("temporal_sequences", "letters"),
    "tracking_shuffled_objects_five_objects": ("tracking_shuffled_objects/five_objects", "letters"),
    "tracking_shuffled_objects_seven_objects": ("tracking_shuffled_objects/seven_objects", "letters"),
    "tracking_shuffled_objects_three_objects": ("tracking_shuffled_objects/three_objects", "letters"),
    "word_sorting": ("word_sorting", "free"),
}
GENERATED = ("boolean_expressions", "multistep_arithmetic_two", "web_of_lies")
BBH_TASKS = tuple(sorted([*FROM_BIGBENCH, *GENERATED]))

# How BBH words each task's question, where it differs from the raw BIG-bench input.
_LEADS = {
    "disambiguation_qa": "In the following sentences, explain the antecedent of the pronoun (which thing the pronoun "
                         "refers to), or state that it is ambiguous.\nSentence: ",
    "dyck_languages": "Complete the rest of the sequence, making sure that the parentheses are closed properly. "
                      "Input: ",
    "movie_recommendation": "Find a movie similar to ",
    "navigate": "If you follow these instructions, do you return to the starting point? ",
    "word_sorting": "Sort the following words alphabetically: List: ",
}
_RENAMED = {"navigate": {"True": "Yes", "False": "No"}, "sports_understanding": {"plausible": "yes",
                                                                                "implausible": "no"}}


def bigbench_tasks_dir() -> Path:
    """`<cache>/packages/bigbench-1.0.0/benchmark_tasks`, holding only the task.json files BBH needs."""
    dest = cache_root() / "packages" / f"bigbench-{BIGBENCH_VERSION}"
    if (dest / ".complete").exists():
        return dest / "benchmark_tasks"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / ".complete").exists():
            _download_bigbench(dest)
    return dest / "benchmark_tasks"


def _download_bigbench(dest: Path) -> None:
    index = "https://pypi.org/simple/bigbench/"
    wanted = {f"bigbench/benchmark_tasks/{d}/task.json" for d, _ in FROM_BIGBENCH.values()}
    try:
        req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
        sdist = next(f for f in files if f["filename"] == f"bigbench-{BIGBENCH_VERSION}.tar.gz")
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            staging = Path(tmp) / "unpacked"
            digest = hashlib.sha256()
            with urllib.request.urlopen(sdist["url"], timeout=120) as resp:
                stream = _HashingReader(resp, digest)
                with tarfile.open(fileobj=stream, mode="r|gz") as tf:
                    for member in tf:
                        rel = member.name.split("/", 1)[-1]
                        if rel in wanted and member.isfile():
                            out = staging / rel.removeprefix("bigbench/")
                            out.parent.mkdir(parents=True, exist_ok=True)
                            out.write_bytes(tf.extractfile(member).read())
                while stream.read(1 << 20):  # hash the tail the tar reader did not need
                    pass
            if digest.hexdigest() != sdist["hashes"]["sha256"]:
                raise FusebenchError(f"the bigbench {BIGBENCH_VERSION} sdist's sha256 does not match PyPI's; retry.")
            (staging / ".complete").write_text(f"{sdist['filename']} sha256={digest.hexdigest()}\n")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
    except (OSError, StopIteration, KeyError) as err:
        raise FusebenchError(f"could not fetch the BIG-bench sources (bigbench=={BIGBENCH_VERSION} sdist from "
                             f"{index}) for the offline BBH: {err}. Check that PyPI is reachable, or run the `bbh` "
                             "suite with --online to use the hub copy.") from err


class _HashingReader(io.RawIOBase):
    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def readable(self) -> bool:
        return True

    def read(self, n=-1) -> bytes:
        data = self.raw.read(n)
        self.digest.update(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _options_block(options: list[str], style: str) -> str:
    if style == "letters":
        return "\nOptions:\n" + "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
    return "\nOptions:\n" + "\n".join(f"- {o}" for o in options)


def _convert(task: str, raw: dict, style: str, example: dict) -> dict:
    text = raw.get("task_prefix", "") if task in ("causal_judgement", "logical_deduction_three_objects",
                                                  "logical_deduction_five_objects", "logical_deduction_seven_objects",
                                                  "penguins_in_a_table", "salient_translation_error_detection") else ""
    text = re.sub(r"\s*\n\s*", "\n" if task == "causal_judgement" else " ", text.strip())
    text = (text + ("\n" if task == "causal_judgement" else " ")) if text else ""
    text += _LEADS.get(task, "") + example["input"].strip().replace("\n ", "\n")
    scores = example.get("target_scores", {})
    if task == "reasoning_about_colored_objects" and len(scores) > 26:
        # counting items list each number twice ("3" and "three"); BBH keeps the words, which fit in (A)-(Z)
        scores = {o: v for o, v in scores.items() if not o.isdigit()}
    options = [o.rstrip(".") if task.startswith("tracking") else o for o in scores]
    gold = next((i for i, v in enumerate(scores.values()) if v == 1), None)
    if task == "hyperbaton":  # 'Which sentence ...: a " X " b " Y " ?' -> two options
        m = re.match(r'(.*?:)\s*a " (.*) " b " (.*) " \?', text)
        text, options, gold = m.group(1), [m.group(2), m.group(3)], ["a", "b"].index(options[gold])
    if task == "snarks":  # 'Which statement is sarcastic? (a) X (b) Y'
        m = re.match(r"(.*?\?)\s*\(a\) (.*) \(b\) (.*)", text, re.S)
        text, options, gold = m.group(1), [m.group(2).strip(), m.group(3).strip()], ["(a)", "(b)"].index(options[gold])
    if style == "free":
        if task == "sports_understanding":
            return {"input": f'Is the following sentence plausible? "{example["input"].strip()}"',
                    "target": _RENAMED[task][options[gold]]}
        target = example.get("target")
        target = target[-1] if isinstance(target, list) else target  # object_counting: ["three", "3"] -> "3"
        return {"input": text, "target": target if target is not None else options[gold]}
    options = [_RENAMED.get(task, {}).get(o, o) for o in options]
    target = f"({chr(65 + gold)})" if style == "letters" else options[gold]
    return {"input": text + _options_block(options, style), "target": target}


def _from_bigbench(task: str, tasks_dir: Path) -> list[dict]:
    directory, style = FROM_BIGBENCH[task]
    raw = json.loads((tasks_dir / directory / "task.json").read_text(encoding="utf-8"))
    examples = raw["examples"]
    if len(examples) > MAX_ITEMS:
        examples = random.Random(f"{SEED}-{task}").sample(examples, MAX_ITEMS)
    return [_convert(task, raw, style, ex) for ex in examples]


# --- generators for the three BBH tasks BIG-bench only has as code -----------------------------------------------
def _boolean_expressions(rng: random.Random) -> dict:
    def expr(depth: int) -> str:
        if depth == 0 or rng.random() < 0.3:
            return ("not " * rng.randint(0, 2)) + rng.choice(["True", "False"])
        left, right = expr(depth - 1), expr(depth - 1)
        inner = f"{left} {rng.choice(['and', 'or'])} {right}"
        return f"( {inner} )" if rng.random() < 0.4 else inner

    text = expr(2)
    return {"input": f"{text} is", "target": str(eval(text))}  # built from True/False/and/or/not only


def _multistep_arithmetic_two(rng: random.Random) -> dict:
    def group() -> str:
        nums = [rng.randint(-9, 9) for _ in range(4)]
        ops = [rng.choice("+-*") for _ in range(3)]
        return "(" + " ".join(f"{n} {o}" for n, o in zip(nums, ops)) + f" {nums[3]})"

    text = f"({group()} {rng.choice('+-*')} {group()})"
    return {"input": f"{text} =", "target": str(eval(text))}  # integers and + - * only


_NAMES = ["Fidel", "Jerry", "Vina", "Millicent", "Raymond", "Alexis", "Sherrie", "Kristian", "Ryan", "Shaunda",
          "Lorine", "Jamey", "Ka", "Delfina", "Gwenn", "Leda", "Christie", "Helene", "Bernita", "Crista"]


def _web_of_lies(rng: random.Random) -> dict:
    names = rng.sample(_NAMES, 5)
    truth = rng.random() < 0.5
    parts = [f"{names[0]} {'tells the truth' if truth else 'lies'}."]
    for prev, name in zip(names, names[1:]):
        says_truth = rng.random() < 0.5
        parts.append(f"{name} says {prev} {'tells the truth' if says_truth else 'lies'}.")
        truth = truth if says_truth else not truth
    return {"input": f"Question: {' '.join(parts)} Does {names[-1]} tell the truth?",
            "target": "Yes" if truth else "No"}


_GENERATORS = {"boolean_expressions": _boolean_expressions, "multistep_arithmetic_two": _multistep_arithmetic_two,
               "web_of_lies": _web_of_lies}


def bbh_items(task: str) -> list[dict]:
    """The offline items of one BBH task, as BBH's {"input", "target"} records."""
    if task in _GENERATORS:
        rng = random.Random(f"{SEED}-{task}")
        return [_GENERATORS[task](rng) for _ in range(MAX_ITEMS)]
    if task in FROM_BIGBENCH:
        return _from_bigbench(task, bigbench_tasks_dir())
    raise FusebenchError(f"unknown BBH task {task!r}; the 27 tasks are: {', '.join(BBH_TASKS)}.")


def write_bbh_jsonl(out_dir: Path, tasks: tuple[str, ...] = BBH_TASKS) -> dict[str, Path]:
    """Write `<out_dir>/<task>.jsonl` for each task (once; reused when present) and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task in tasks:
        path = out_dir / f"{task}.jsonl"
        if not path.exists():
            write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bbh_items(task)))
        paths[task] = path
    return paths
