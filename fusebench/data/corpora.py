"""Corpora: prepare text once into `train.jsonl` / `test.jsonl` (+ `manifest.json`) that every later stage reads.

Three kinds share one interface (`prepare_corpus(spec, out_dir)`):
- `tiny_world`: offline domains cut from registry packages (see ../shared/RESOURCES.md) —
  legal (license texts, scancode-toolkit-mini), biomed (Gene Ontology definitions, Debian r-bioc-go.db),
  humanities (Webster 1913, Debian dict-gcide), code (the Python standard library's own source) — and two mixes of
  all four: `general` (what the tiny base models are pretrained on) and `mix` (the stand-in for MiniPile, on which
  the target is continually trained: like MiniPile for Llama-2, text of the same kinds the model has not seen).
- `hub`: a Hugging Face dataset (`JeanKaddour/minipile`, Pile subsets, C4) at a `revision`: read from the snapshot
  `hf download --repo-type dataset ID` left in the hub cache when there is one (offline too; parquet, JSON, Arrow,
  the README's configs), else through `datasets.load_dataset`.
- `files`: local parquet / JSON lines / Arrow / CSV files (rows' `text_field`, read by `datasets`' builders, chosen
  by extension) or any other file as one plain-text document. A row with `"messages"` (a conversation of
  {role, content}) is kept as one, written as `{"messages", "text"}` like the chat corpora (`text` a plain rendering
  when the row has none), for chat training (`fusebench.train.chat`); so is a hub row whose field holds ShareGPT
  turns (FuseChat-Mixture's `conversations`).

Splits are made by a hash of each document, so they do not depend on order or on how much is kept. Each tiny-world
domain's documents fall into four disjoint pools: `test` (held out from every model), `domain` (the domain's
training split, used to specialise experts), `general` (mixed into the pretraining corpus) and `mix` (mixed into the
continual-training corpus). So continual training and expert training really see new data, and no model ever
trains on a test document.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
import sqlite3
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from fusebench.data.packages import Package, archive_checksum, fetch
from fusebench.errors import FusebenchError
from fusebench.jsonl import read_jsonl

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


def _row_doc(row: dict, text_field: str = "text"):
    """A row's document: its text field, or a conversation kept whole."""
    if not row.get("messages"):
        return row[text_field]
    text = row.get(text_field) or "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in row["messages"])
    return {"messages": row["messages"], "text": text}


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _hub_doc(value):
    """A hub row's field: text, or a conversation (ShareGPT `{from, value}` turns, as FuseChat-Mixture's
    `conversations`, or `{role, content}` messages) kept as one for chat training."""
    if isinstance(value, str):
        return value
    messages = [{"role": _SHAREGPT_ROLES.get(m.get("from"), m.get("from")), "content": m["value"]} if "from" in m
                else {"role": m["role"], "content": m["content"]} for m in value]
    return _row_doc({"messages": messages})


# A recipe may score held-out documents in passages (`test_passage_chars`), cut at line breaks: the tiny world's
# test pool holds 33 (code) to 159 (biomed) whole documents per domain, too few to resolve 0.002 bits per byte
# (issue 19); in passages of 1000 characters it holds ≥ 488. Training documents stay whole, and the split by
# document hash is unchanged, so no passage of a test document is ever trained on.
_MIN_PASSAGE_CHARS = 200    # a shorter tail joins the passage before it


def passages(text: str, max_chars: int) -> list[str]:
    """`text` cut at line breaks into pieces of at most `max_chars` (a longer line is a piece of its own)."""
    out: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > max_chars:
            out.append(current)
            current = ""
        current += line
    if current.strip():
        if out and len(current) < _MIN_PASSAGE_CHARS:
            out[-1] += current
        else:
            out.append(current)
    return [p.strip("\n") for p in out if p.strip()]


# Decontamination (issue 19). The tiny world's texts repeat themselves across documents — license boilerplate
# ("THE SOFTWARE IS PROVIDED AS IS ..."), the standard library's license headers and idioms — so a test passage of a
# held-out document can still be text a model trained on: 28% of the legal test characters and 8% of the code ones
# sit in lines that also occur in some training document. A recipe may drop such passages (`decontaminate: true`):
# a held-out passage is kept only when none of its units of >= 30 characters occurs in a document of any domain's
# training pools — every pool any tiny-world corpus trains on, so the rule needs no knowledge of the rest of the
# recipe — and exact repeats within the test split are kept once. The units are lines (code, wrapped licenses) and
# sentences of the whitespace-collapsed text (prose wrapped differently, or unwrapped, in another document).
_UNIT_CHARS = 30
_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+")


def _pools(name: str, seed: int) -> dict[str, list[str]]:
    pools: dict[str, list[str]] = {"test": [], "domain": [], "general": [], "mix": []}
    for doc in DOMAINS[name].docs():
        pools[_pool(doc, seed)].append(doc)
    return pools


def _units(text: str) -> Iterator[str]:
    """The lines and the sentences of `text` (whitespace collapsed) of at least 30 characters."""
    lines = (line.strip() for line in text.splitlines())
    sentences = _SENTENCE_END.split(" ".join(text.split()))
    return (u for u in itertools.chain(lines, sentences) if len(u) >= _UNIT_CHARS)


def training_units(pools_by_domain: dict[str, dict[str, list[str]]]) -> set[str]:
    """Every unit (line or sentence, >= 30 characters) of a training-pool document of the given domains' pools."""
    return {unit for pools in pools_by_domain.values() for pool, docs in pools.items() if pool != "test"
            for doc in docs for unit in _units(doc)}


def decontaminated(held_out: Iterator[str], train_units: set[str], counts: dict) -> Iterator[str]:
    """The held-out texts that share no unit with training text, each once; `counts` tallies what was checked
    and dropped until enough were taken (it fills as the generator is consumed)."""
    seen: set[str] = set()
    for text in held_out:
        counts["checked"] += 1
        if text in seen:
            counts["repeated"] += 1
        elif any(unit in train_units for unit in _units(text)):
            counts["in_training_text"] += 1
        else:
            seen.add(text)
            yield text


def held_out_passages(docs: list[str], passage_chars: int, spread: bool = False) -> Iterator[tuple[int, str]]:
    """(document index, passage) of held-out documents in the order they are taken: document by document, or
    (`spread`) round robin — every document's first passage, then every one's second, ... — so that a test set cut
    short comes from as many source documents as there are (passages of one document are not independent:
    report/power.py)."""
    cut = [passages(d, passage_chars) for d in docs]
    if not spread:
        return ((i, p) for i, pieces in enumerate(cut) for p in pieces)
    rounds = itertools.zip_longest(*[[(i, p) for p in pieces] for i, pieces in enumerate(cut)])
    return (x for row in rounds for x in row if x is not None)


def tiny_world_splits(domain: str, seed: int, train_chars: int, test_chars: int, passage_chars: int | None = None,
                      decontaminate: bool = False, spread: bool = False) -> tuple[list[str], list[str], dict]:
    """The train and test documents of one tiny-world corpus (test documents cut into passages of at most
    `passage_chars` characters where given, taken round robin over the documents with `spread`, and decontaminated
    where asked), and provenance for its manifest."""
    names = list(DOMAINS) if domain in MIXES else [domain]
    # each domain's documents are read and pooled once: decontamination needs every domain's training pools
    pools_by_domain = {name: _pools(name, seed) for name in (DOMAINS if decontaminate else names)}
    train_units = training_units(pools_by_domain) if decontaminate else None
    train, test, sources = [], [], []
    for name in names:
        dom = DOMAINS[name]
        pools = pools_by_domain[name]
        pool = domain if domain in MIXES else "domain"
        share = len(names)  # the general mix takes an equal share from each domain
        train += _take(iter(pools[pool]), train_chars // share)
        held_out = ((p for _, p in held_out_passages(pools["test"], passage_chars, spread)) if passage_chars
                    else pools["test"])
        counts = {"checked": 0, "in_training_text": 0, "repeated": 0}
        if train_units is not None:
            held_out = decontaminated(iter(held_out), train_units, counts)
        test += _take(iter(held_out), test_chars // share)
        sources.append({"domain": name, "source": dom.source, "license": dom.license,
                        "archive_sha256": archive_checksum(dom.package) if dom.package else None,
                        **({"decontamination": {"rule": f"no line or sentence of >= {_UNIT_CHARS} characters "
                                                         "in any training pool; repeats kept once", **counts}}
                           if train_units is not None else {})})
    if domain in MIXES:  # interleave the domains deterministically, as a mixed corpus would be
        train.sort(key=lambda d: hashlib.blake2b(d.encode(), digest_size=8).digest())
    return train, test, {"sources": sources}


# --- the other kinds ---------------------------------------------------------------------------------------------

def hub_dataset_snapshot(path: str, revision: str | None = None) -> Path | None:
    """The local snapshot of a hub dataset at `revision` (a branch, tag or commit), as `hf download --repo-type
    dataset` leaves it in the hub cache; None when it is not there. Never reaches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, repo_type="dataset", revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or that revision is not) are all "not here"
        return None


def download_command(path: str, revision: str | None = None) -> str:
    return f"hf download --repo-type dataset {path}" + (f" --revision {revision}" if revision else "")


def _snapshot_split(root: Path, name: str | None, split: str):
    """One split of a downloaded snapshot, read by `datasets`' builder for its files (parquet, JSON, Arrow, CSV):
    the README's `configs:` say which files make config `name` (C4: `en/c4-train.*.json.gz`); without them a
    folder called `name` holds the config, and split names come from the file names."""
    import datasets

    try:
        return datasets.load_dataset(str(root), name, split=split, streaming=True)
    except ValueError:  # no such config in the README: the config is a folder of the snapshot
        if not name or not (root / name).is_dir():
            raise
        return datasets.load_dataset(str(root), data_dir=name, split=split, streaming=True)


def hub_splits(path: str, name: str | None, text_field: str, train_split: str, test_split: str,
               train_chars: int, test_chars: int, revision: str | None = None) -> tuple[list[str], list[str], dict]:
    """A hub dataset's splits: from its downloaded snapshot when the hub cache holds one at `revision` (offline
    too), else through `datasets.load_dataset` (online, or its own prepared cache)."""
    import datasets

    snapshot = hub_dataset_snapshot(path, revision)
    try:
        if snapshot is not None:
            splits = [_snapshot_split(snapshot, name, s) for s in (train_split, test_split)]
        else:
            splits = [datasets.load_dataset(path, name, split=s, streaming=True, revision=revision)
                      for s in (train_split, test_split)]
        train = _take((_hub_doc(row[text_field]) for row in splits[0]), train_chars)
        test = _take((_hub_doc(row[text_field]) for row in splits[1]), test_chars)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one explanation
        where = f"its snapshot {snapshot}" if snapshot else "the hub"
        raise FusebenchError(
            f"cannot read the hub dataset {path!r} (config {name!r}, revision {revision or 'main'!r}, splits "
            f"{train_split!r} / {test_split!r}, field {text_field!r}) from {where}: {type(err).__name__}: "
            f"{str(err)[:300]}. Check `name`, `train_split`, `test_split` and `text_field` in the recipe's corpus; "
            f"offline, download it first ({download_command(path, revision)}), or use local files (kind: files) or "
            "a tiny-world corpus (kind: tiny_world, domain: general stands in for MiniPile).") from None
    return train, test, {"sources": [{"hub": path, "config": name, "text_field": text_field,
                                      "revision": snapshot.name if snapshot else revision}]}


# file suffix (after any compression suffix) -> the `datasets` builder that reads it
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def _builder(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in _COMPRESSED]
    return BUILDERS.get(suffixes[-1]) if suffixes else None


def _text_file(path: Path) -> str:
    """A whole file as one document, refusing binary data (a parquet file named .txt reads as "PAR1...")."""
    raw = path.read_bytes()
    if b"\x00" in raw[:4096] or raw[:4] == b"PAR1":
        raise FusebenchError(f"corpus file {path} is not text (binary data). Name files by their format so the "
                             f"right reader is used: {', '.join(BUILDERS)} (optionally compressed: "
                             f"{', '.join(_COMPRESSED)}), or .txt for one plain-text document per file.")
    return raw.decode("utf-8", errors="replace")


def matching_files(pattern: str) -> list[Path]:
    """The files a corpus `files:` entry names (a path or a glob, relative or absolute)."""
    import glob

    if any(c in pattern for c in "*?["):
        return sorted(Path(m) for m in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    return [Path(pattern).expanduser()]


def files_splits(paths: list[str], seed: int, train_chars: int, test_chars: int,
                 text_field: str = "text") -> tuple[list[str], list[str], dict]:
    """Local files: parquet / JSON lines / Arrow / CSV rows (their `text_field`) through `datasets`' builders, and
    any other file as one plain-text document."""
    import datasets

    docs = []
    for pattern in paths:
        matches = matching_files(pattern)
        if not matches or not all(m.exists() for m in matches):
            raise FusebenchError(f"corpus file {pattern!r} does not exist. Fix the path (relative to "
                                 f"{Path.cwd()}) or use a glob such as data/*.txt.")
        for m in matches:
            builder = _builder(m)
            if builder is None:
                docs.append(_text_file(m))
                continue
            try:
                rows = datasets.load_dataset(builder, data_files=[str(m)], split="train", streaming=True)
                docs += [_row_doc(row, text_field) for row in rows]
            except Exception as err:  # noqa: BLE001 - a reader's failure becomes one explanation
                raise FusebenchError(f"cannot read corpus file {m} as {builder} rows with a {text_field!r} field: "
                                     f"{type(err).__name__}: {str(err)[:300]}. Fix the file or `text_field` in the "
                                     "recipe's corpus.") from None
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
    return [row["text"] for row in read_jsonl(Path(corpus_dir) / f"{split}.jsonl")]


def read_messages(corpus_dir: Path, split: str) -> list[list[dict]] | None:
    """The conversations of a chat corpus's split (lines carrying `messages`), or None for a plain-text corpus."""
    rows = read_jsonl(Path(corpus_dir) / f"{split}.jsonl")
    return [r["messages"] for r in rows] if rows and all("messages" in r for r in rows) else None
