"""Corpora: prepare text once into `train.jsonl` / `test.jsonl` (+ `manifest.json`) that every later stage reads.

Three kinds share one interface (`prepare_corpus(spec, out_dir)`):
- `tiny_world`: offline domains cut from registry packages (see ../shared/RESOURCES.md) —
  legal (license texts, scancode-toolkit-mini), biomed (Gene Ontology definitions, Debian r-bioc-go.db),
  humanities (Webster 1913, Debian dict-gcide), code (the Python standard library's own source) — and two mixes of
  all four: `general` (what the tiny base models are pretrained on) and `mix` (the stand-in for MiniPile, on which
  the target is continually trained: like MiniPile for Llama-2, text of the same kinds the model has not seen).
- `hub`: a Hugging Face dataset (`JeanKaddour/minipile`, Pile subsets), for real runs with network access.
- `files`: local `.txt` (one document per file) or `.jsonl` (one {"text": ...} per line) files; a `.jsonl` line
  with `"messages"` (a conversation of {role, content}) is kept as one, written as `{"messages", "text"}` like the
  chat corpora (`text` a plain rendering when the line has none), for chat training (`fusebench.train.chat`).

Splits are made by a hash of each document, so they do not depend on order or on how much is kept. Each tiny-world
domain's documents fall into four disjoint pools: `test` (held out from every model), `domain` (the domain's
training split, used to specialise experts), `general` (mixed into the pretraining corpus) and `mix` (mixed into the
continual-training corpus). So continual training and expert training really see new data, and no model ever
trains on a test document.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from fusebench.data.packages import Package, archive_checksum, fetch
from fusebench.errors import FusebenchError

# --- the tiny world's sources -------------------------------------------------------------------------------------

LEGAL = Package("scancode-toolkit-mini", "32.5.0", "pypi-wheel", "CC-BY-4.0 (data); texts under their own terms",
                ("licensedcode/data/licenses/",))
BIOMED = Package("r-bioc-go.db", "any", "debian", "CC-BY-4.0", ("",))
HUMANITIES = Package("dict-gcide", "any", "debian", "GPL-2+ (GCIDE); Webster 1913 text public domain", ("",))


def _legal_docs() -> Iterator[str]:
    for f in sorted(fetch(LEGAL).rglob("*.LICENSE")):
        text = f.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):  # YAML front matter with the license's metadata, not prose
            text = text.split("\n---", 1)[-1]
        text = text.strip()
        if len(text) > 200:
            yield text


def _biomed_docs() -> Iterator[str]:
    db = next(fetch(BIOMED).rglob("GO.sqlite"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute("SELECT term, definition FROM go_term WHERE definition IS NOT NULL ORDER BY go_id").fetchall()
    con.close()
    # one GO definition is a sentence; twelve consecutive terms (related, by id) make a document-sized text
    for i in range(0, len(rows), 12):
        yield "\n".join(f"{term}: {definition}" for term, definition in rows[i:i + 12])


def _humanities_docs() -> Iterator[str]:
    dz = next(fetch(HUMANITIES).rglob("gcide.dict.dz"))
    with gzip.open(dz, "rt", encoding="utf-8", errors="replace") as fh:
        entries = fh.read().split("\n\n")
    entries = [e.strip() for e in entries[40:] if "[1913 Webster]" in e]  # skip the file's own front matter
    for i in range(0, len(entries), 8):
        yield "\n\n".join(e.replace("[1913 Webster]", "").strip() for e in entries[i:i + 8])


def _code_docs() -> Iterator[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).parts
        if any(p in ("test", "tests", "idlelib", "site-packages", "lib2to3") for p in rel):
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        if 500 < len(text) < 60_000:
            yield text


@dataclass(frozen=True)
class Domain:
    docs: Callable[[], Iterator[str]]
    source: str
    license: str
    package: Package | None


DOMAINS: dict[str, Domain] = {
    "legal": Domain(_legal_docs, "scancode-toolkit-mini 32.5.0 (PyPI wheel), licensedcode/data/licenses",
                    LEGAL.license, LEGAL),
    "biomed": Domain(_biomed_docs, "Debian r-bioc-go.db, GO.sqlite go_term definitions", BIOMED.license, BIOMED),
    "humanities": Domain(_humanities_docs, "Debian dict-gcide, gcide.dict.dz (Webster 1913)", HUMANITIES.license,
                         HUMANITIES),
    "code": Domain(_code_docs, f"Python {sysconfig.get_python_version()} standard library source", "PSF-2.0", None),
}
MIXES = ("general", "mix")
TINY_WORLD_NAMES = (*DOMAINS, *MIXES)


def _pool(text: str, seed: int) -> str:
    """Deterministic four-way split by content hash: ~6% test, ~44% domain, ~30% general, ~20% mix."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest(), "little") % 100
    return "test" if h < 6 else "domain" if h < 50 else "general" if h < 80 else "mix"


def _take(docs: Iterator, max_chars: int) -> list:
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d)
        total += len(_text(d))
    return out


def _text(doc) -> str:
    """A document's text: itself, or a conversation's `text` (documents are strings or {"messages", "text"})."""
    return doc if isinstance(doc, str) else doc["text"]


def _jsonl_doc(row: dict):
    if "messages" not in row:
        return row["text"]
    text = row.get("text") or "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in row["messages"])
    return {"messages": row["messages"], "text": text}


def tiny_world_splits(domain: str, seed: int, train_chars: int, test_chars: int) -> tuple[list[str], list[str], dict]:
    """The train and test documents of one tiny-world corpus, and provenance for its manifest."""
    names = list(DOMAINS) if domain in MIXES else [domain]
    train, test, sources = [], [], []
    for name in names:
        dom = DOMAINS[name]
        pools: dict[str, list[str]] = {"test": [], "domain": [], "general": [], "mix": []}
        for doc in dom.docs():
            pools[_pool(doc, seed)].append(doc)
        pool = domain if domain in MIXES else "domain"
        share = len(names)  # the general mix takes an equal share from each domain
        train += _take(iter(pools[pool]), train_chars // share)
        test += _take(iter(pools["test"]), test_chars // share)
        sources.append({"domain": name, "source": dom.source, "license": dom.license,
                        "archive_sha256": archive_checksum(dom.package) if dom.package else None})
    if domain in MIXES:  # interleave the domains deterministically, as a mixed corpus would be
        train.sort(key=lambda d: hashlib.blake2b(d.encode(), digest_size=8).digest())
    return train, test, {"sources": sources}


# --- the other kinds ---------------------------------------------------------------------------------------------

def hub_splits(path: str, name: str | None, text_field: str, train_split: str, test_split: str,
               train_chars: int, test_chars: int) -> tuple[list[str], list[str], dict]:
    import datasets

    try:
        splits = [datasets.load_dataset(path, name, split=s, streaming=True) for s in (train_split, test_split)]
        train = _take((_hub_doc(row[text_field]) for row in splits[0]), train_chars)
        test = _take((_hub_doc(row[text_field]) for row in splits[1]), test_chars)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one explanation
        raise FusebenchError(
            f"cannot read the hub dataset {path!r} (config {name!r}): {type(err).__name__}: {str(err)[:300]}. "
            "Offline, use a tiny-world corpus instead (kind: tiny_world, domain: general stands in for MiniPile) "
            "or local files (kind: files)."
        ) from None
    return train, test, {"sources": [{"hub": path, "config": name, "text_field": text_field}]}


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _hub_doc(value):
    """A hub row's field: text, or a conversation (ShareGPT `{from, value}` turns, as FuseChat-Mixture's
    `conversations`, or `{role, content}` messages) kept as one for chat training."""
    if isinstance(value, str):
        return value
    messages = [{"role": _SHAREGPT_ROLES.get(m.get("from"), m.get("from")), "content": m["value"]} if "from" in m
                else {"role": m["role"], "content": m["content"]} for m in value]
    return _jsonl_doc({"messages": messages})


def files_splits(paths: list[str], seed: int, train_chars: int, test_chars: int) -> tuple[list[str], list[str], dict]:
    docs = []
    for pattern in paths:
        matches = sorted(Path().glob(pattern)) if any(c in pattern for c in "*?[") else [Path(pattern)]
        if not matches or not all(m.exists() for m in matches):
            raise FusebenchError(f"corpus file {pattern!r} does not exist. Fix the path (relative to "
                                 f"{Path.cwd()}) or use a glob such as data/*.txt.")
        for m in matches:
            if m.suffix == ".jsonl":
                docs += [_jsonl_doc(json.loads(line)) for line in m.read_text(encoding="utf-8").splitlines() if line]
            else:
                docs.append(m.read_text(encoding="utf-8", errors="replace"))
    pools: dict[str, list[str]] = {"test": [], "train": []}
    for d in docs:
        pools["test" if _pool(_text(d), seed) == "test" else "train"].append(d)
    return (_take(iter(pools["train"]), train_chars), _take(iter(pools["test"]), test_chars),
            {"sources": [{"files": paths}]})


# --- the artifact ------------------------------------------------------------------------------------------------

def write_corpus(out_dir: Path, train: list[str], test: list[str], provenance: dict) -> None:
    """Write the two splits and a manifest with counts and checksums."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"provenance": provenance, "splits": {}}
    for split, docs in (("train", train), ("test", test)):
        if not docs:
            raise FusebenchError(f"the corpus split {split!r} came out empty ({provenance}). Raise its size "
                                 "(train_chars / test_chars) or give more documents.")
        data = "".join(json.dumps({"text": d} if isinstance(d, str) else d, ensure_ascii=False) + "\n"
                       for d in docs).encode()
        (out_dir / f"{split}.jsonl").write_bytes(data)
        texts = [_text(d) for d in docs]
        manifest["splits"][split] = {"documents": len(docs), "characters": sum(map(len, texts)),
                                     "bytes_utf8": sum(len(d.encode()) for d in texts),
                                     "sha256": hashlib.sha256(data).hexdigest()}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def read_split(corpus_dir: Path, split: str) -> list[str]:
    path = Path(corpus_dir) / f"{split}.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]


def read_messages(corpus_dir: Path, split: str) -> list[list[dict]] | None:
    """The conversations of a chat corpus's split (lines carrying `messages`), or None for a plain-text corpus."""
    lines = (Path(corpus_dir) / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line]
    return [r["messages"] for r in rows] if rows and all("messages" in r for r in rows) else None
