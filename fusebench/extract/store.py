"""The distribution store: every token's top-k next-token log-probs of one model, in at most 32 bytes at k = 10.

What position t holds
---------------------
For a tokenized sequence `input_ids[0..T-1]`, position t holds the model's distribution *after reading tokens
0..t*, i.e. the distribution that predicts token t+1. All T positions are stored (the last one predicts what follows
the sequence and is what the aligners may need), but only positions 0..T-2 have a gold next token, so
`gold_logprobs` has T-1 entries: `gold_logprobs[t] = log p(input_ids[t+1] | input_ids[..t])`. `sequence_ce` is the
mean of `-gold_logprobs`, computed in float32 from the unquantised log-probs before anything is stored.

Layout on disk (format 2)
-------------------------
    DIR/meta.json                 format_version, fingerprints, vocab_size, top_k, bit widths, shards with sha256
    DIR/shard-00000/shard.json    this shard's counts and checksums (finalize() gathers these into meta.json)
    DIR/shard-00000/input_ids.npy [N] tokenized corpus (all sequences of the shard, concatenated)
    DIR/shard-00000/offsets.npy   [S+1] int64: sequence s is rows offsets[s]:offsets[s+1]
    DIR/shard-00000/topk_ids.npy  [N, ceil((k·B + G) / 8)] uint8: k ids of B = bits(vocab_size - 1) bits each,
                                  then G >= 4 bits of the gold field (below), bit-packed, least significant first
    DIR/shard-00000/topk_nlp.npy  [N, ceil((X + 7(k-1)) / 8)] uint8: the top slot's -log p in X >= 9 bits, then
                                  each other slot's distance below it in 7 bits
    DIR/shard-00000/sequence_ce.npy [S] float32

Every file is a plain `.npy`, opened with `np.load(mmap_mode="r")`, so a store larger than memory reads lazily.
A shard directory appears by an atomic rename of a finished temp directory: it is either complete or absent.

Why 32 bytes suffice for any vocabulary up to 2^18 (Qwen2's 151,936 rows: B = 18)
-------------------------------------------------------------------------------
Ids take exactly B bits (not the 32 of a uint32 array). Slots are sorted by descending log-prob, so the fusion
loss, a softmax over the slots (fusebench.fuse.loss.teacher_probs), depends only on each slot's distance below the
top slot; those distances are companded (code = round(127·sqrt(d / 32)), d clipped at 32 nat, where a slot weighs
< 1e-13 of the top): fine where weights are large (±0.014 nat at d = 0.1, ±0.045 at d = 1), coarse in the tail.
The top slot's own -log p is companded the same way over [0, 64) nat in X bits (X = 9 at k = 10: ±0.016 nat at
1 nat). Measured: the fusion loss changes by < 1e-3 relative (tests/test_store.py, bench/bench_store.py). At
k = 10 a token costs 23 + 9 = 32 bytes for B = 18, 30 for B = 16.

The gold log-prob: when the gold next token is in the top-k (its id equals input_ids[t+1]) it is read back from
that slot. Otherwise it is below the last slot, and the G spare bits of the id row hold its distance below the
last slot, companded over [0, 32) nat (G = 4 at B = 18, k = 10: ±1 nat; coarse, and read by nothing but
diagnostics: the exact per-sequence CE is stored separately).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusebench.checksums import sha256_file
from fusebench.errors import FusebenchError
from fusebench.extract.packing import Layout, layout_fields, pack_rows, sorted_descending, unpack_rows

FORMAT_VERSION = 2
FILES = ("input_ids.npy", "offsets.npy", "topk_ids.npy", "topk_nlp.npy", "sequence_ce.npy")


@dataclass
class SequenceDistributions:
    """One sequence's next-token distributions (position t predicts token t+1; see the module docstring)."""

    input_ids: np.ndarray      # [T] int64
    topk_ids: np.ndarray       # [T, k] int64, slots sorted by descending log-prob
    topk_logprobs: np.ndarray  # [T, k] float32
    gold_logprobs: np.ndarray  # [T-1] float32
    sequence_ce: float         # mean of -gold_logprobs (nats per predicted token)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds every id below vocab_size."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.uint64)




def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


# ---------------------------------------------------------------------------------------------------- packing


def bytes_per_token(vocab_size: int, top_k: int) -> int:
    """What a store spends per token: the top-k rows (ids + gold field, log-probs) and the token's own id."""
    layout = Layout.of(vocab_size, top_k)
    return layout.id_row_bytes + layout.nlp_row_bytes + id_dtype(vocab_size).itemsize


def gold_from_topk(input_ids: np.ndarray, topk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions 0..T-2: (whether token t+1 is among the top-k at t, the slot index where it is)."""
    hit = topk_ids[:-1] == input_ids[1:, None]
    return hit.any(axis=1), hit.argmax(axis=1)


# ---------------------------------------------------------------------------------------------------- writing


class StoreWriter:
    """Writes a store shard by shard; each shard is atomic, so an interrupted extraction resumes per shard.

    Several processes may write disjoint shards of the same store; one of them calls `finalize()` at the end.
    Opening a writer on a directory made for another model, tokenizer, corpus or k raises a FusebenchError rather
    than silently mixing two extractions.
    """

    def __init__(self, path: str | Path, model_fingerprint: str, tokenizer_fingerprint: str, vocab_size: int,
                 top_k: int, corpus_fingerprint: str = "", num_shards: int | None = None):
        self.path = Path(path)
        if top_k < 1 or top_k > vocab_size:
            raise FusebenchError(f"top_k must be between 1 and the vocabulary size ({vocab_size}); got {top_k}.")
        self.header = {"format_version": FORMAT_VERSION, "model_fingerprint": model_fingerprint,
                       "tokenizer_fingerprint": tokenizer_fingerprint, "corpus_fingerprint": corpus_fingerprint,
                       "vocab_size": int(vocab_size), "top_k": int(top_k), "id_dtype": id_dtype(vocab_size).name,
                       "num_shards": num_shards, **layout_fields(Layout.of(vocab_size, top_k))}
        self.path.mkdir(parents=True, exist_ok=True)
        existing = self.path / "writer.json"
        if existing.exists():
            try:
                old = json.loads(existing.read_text())
            except json.JSONDecodeError:
                old = {}
            if old != self.header:
                diff = sorted(k for k in self.header if old.get(k) != self.header[k])
                raise FusebenchError(
                    f"{self.path} holds a distribution store from a different extraction (differs in "
                    f"{', '.join(diff)}). Delete {self.path} and rerun, or write to another directory.")
        else:
            _write_json_atomic(existing, self.header)

    def has_shard(self, index: int) -> bool:
        return (self.path / shard_name(index) / "shard.json").exists()

    def write_shard(self, index: int, sequences: list[SequenceDistributions]) -> None:
        """Encode and write one shard atomically (temp directory + rename)."""
        k, dt = self.header["top_k"], np.dtype(self.header["id_dtype"])
        lengths = np.array([s.length for s in sequences], dtype=np.int64)
        if (lengths < 2).any():
            bad = int(np.flatnonzero(lengths < 2)[0])
            raise FusebenchError(f"shard {index}: sequence {bad} has {lengths[bad]} token(s); every sequence needs "
                                 "at least 2 tokens to have a next-token prediction. Drop such sequences first.")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        input_ids = np.concatenate([s.input_ids for s in sequences]).astype(np.int64)
        topk_ids = np.concatenate([s.topk_ids for s in sequences]).astype(np.int64)
        topk_lp = np.concatenate([s.topk_logprobs for s in sequences]).astype(np.float32)
        if topk_ids.shape[1] != k:
            raise FusebenchError(f"shard {index}: got top-{topk_ids.shape[1]} distributions for a top-{k} store.")
        if max(input_ids.max(initial=0), topk_ids.max(initial=0)) >= self.header["vocab_size"]:
            raise FusebenchError(f"shard {index}: a token id is >= vocab_size {self.header['vocab_size']}; "
                                 "the tokenizer and the model disagree about the vocabulary.")
        # a gold entry per row; the last row of each sequence has none (kept 0, never read)
        gold = np.zeros(len(input_ids), dtype=np.float32)
        in_topk = np.zeros(len(input_ids), dtype=bool)
        for s, start in zip(sequences, offsets[:-1]):
            gold[start:start + s.length - 1] = s.gold_logprobs
            in_topk[start:start + s.length - 1] = gold_from_topk(s.input_ids, s.topk_ids)[0]
        topk_ids, topk_lp = sorted_descending(topk_ids, topk_lp)
        ids_rows, nlp_rows = pack_rows(Layout.of(self.header["vocab_size"], k), topk_ids, topk_lp, gold, in_topk)
        arrays = {"input_ids.npy": input_ids.astype(dt), "offsets.npy": offsets,
                  "topk_ids.npy": ids_rows, "topk_nlp.npy": nlp_rows,
                  "sequence_ce.npy": np.array([s.sequence_ce for s in sequences], dtype=np.float32)}

        final = self.path / shard_name(index)
        tmp = self.path / f".{shard_name(index)}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {}
        for name, arr in arrays.items():
            np.save(tmp / name, np.ascontiguousarray(arr))
            files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        info = {"index": index, "num_sequences": len(sequences), "num_tokens": int(offsets[-1]), "files": files}
        (tmp / "shard.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(final, ignore_errors=True)  # a shard dir without shard.json is a leftover; replace it
        os.rename(tmp, final)

    def finalize(self, num_shards: int | None = None) -> "DistributionStore":
        """Check that shards 0..n-1 all exist, write meta.json (atomically) and open the store."""
        n = num_shards if num_shards is not None else self.header["num_shards"]
        if n is None:
            n = len(list(self.path.glob("shard-*")))
        missing = [i for i in range(n) if not self.has_shard(i)]
        if missing:
            raise FusebenchError(f"{self.path}: shards {missing[:10]} are missing, so the store cannot be finalised. "
                                 "Rerun the extraction; finished shards are kept and skipped.")
        shards = [json.loads((self.path / shard_name(i) / "shard.json").read_text()) for i in range(n)]
        meta = {**self.header, "num_shards": n, "num_sequences": sum(s["num_sequences"] for s in shards),
                "num_tokens": sum(s["num_tokens"] for s in shards), "shards": shards}
        _write_json_atomic(self.path / "meta.json", meta)
        return DistributionStore.open(self.path)


# ---------------------------------------------------------------------------------------------------- reading


class DistributionStore:
    """A finished store, read lazily through memory maps. Open with `DistributionStore.open(path)`."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        counts = [s["num_sequences"] for s in meta["shards"]]
        self._first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._open: dict[int, dict[str, np.ndarray]] = {}
        self.layout = Layout.of(int(meta["vocab_size"]), int(meta["top_k"]))

    @classmethod
    def open(cls, path: str | Path) -> "DistributionStore":
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise FusebenchError(f"{path} is not a finished distribution store (no meta.json): the extraction did "
                                 "not complete. Rerun it to resume, or delete the directory and rerun.")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            raise FusebenchError(f"{meta_path} is not valid JSON. Delete {path} and rerun the extraction.") from None
        if meta.get("format_version") != FORMAT_VERSION:
            older = isinstance(meta.get("format_version"), int) and meta["format_version"] < FORMAT_VERSION
            raise FusebenchError(
                f"{path} was written in store format version {meta.get('format_version')}, but this fusebench reads "
                f"version {FORMAT_VERSION}" + (" (format 2 packs ids in exactly the bits the vocabulary needs and "
                                              "log-probs in 7-9 bits: 32 B/token at k = 10 up to 2^18 ids)" if older
                                              else "") + f". Delete {path} and rerun the extraction.")
        expected = layout_fields(Layout.of(int(meta["vocab_size"]), int(meta["top_k"])))
        if any(meta.get(key) != value for key, value in expected.items()):
            raise FusebenchError(f"{meta_path} records bit widths that do not match its vocab_size and top_k: the "
                                 f"store is corrupted. Delete {path} and rerun the extraction.")
        for shard in meta["shards"]:  # cheap structural check; verify() compares checksums
            for name, info in shard["files"].items():
                f = path / shard_name(shard["index"]) / name
                if not f.exists() or f.stat().st_size != info["bytes"]:
                    raise FusebenchError(
                        f"{f} is missing or has {f.stat().st_size if f.exists() else 0} bytes where meta.json "
                        f"expects {info['bytes']}: the store is truncated or was modified. Delete {path} and rerun.")
        return cls(path, meta)

    @property
    def num_sequences(self) -> int:
        return int(self.meta["num_sequences"])

    @property
    def num_tokens(self) -> int:
        return int(self.meta["num_tokens"])

    @property
    def top_k(self) -> int:
        return int(self.meta["top_k"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def __len__(self) -> int:
        return self.num_sequences

    def _shard(self, index: int) -> dict[str, np.ndarray]:
        if index not in self._open:
            folder = self.path / shard_name(index)
            arrays = {}
            for name in FILES:
                try:
                    arrays[name] = np.load(folder / name, mmap_mode="r")
                except (ValueError, OSError, EOFError) as err:
                    raise FusebenchError(f"{folder / name} cannot be read ({err}): the store is corrupted. "
                                         f"Delete {self.path} and rerun the extraction.") from None
            self._check_headers(index, arrays)
            self._open[index] = arrays
        return self._open[index]

    def _check_headers(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """A damaged .npy header can still parse, with another shape or dtype: compare with shard.json's counts."""
        info = self.meta["shards"][index]
        tokens, seqs, k, ids = info["num_tokens"], info["num_sequences"], self.top_k, self.meta["id_dtype"]
        expected = {"input_ids.npy": ((tokens,), ids), "offsets.npy": ((seqs + 1,), "int64"),
                    "topk_ids.npy": ((tokens, self.layout.id_row_bytes), "uint8"),
                    "topk_nlp.npy": ((tokens, self.layout.nlp_row_bytes), "uint8"),
                    "sequence_ce.npy": ((seqs,), "float32")}
        for name, (shape, dtype) in expected.items():
            a = arrays[name]
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise FusebenchError(
                    f"{self.path / shard_name(index) / name} has a damaged header: it says {a.dtype}{list(a.shape)} "
                    f"where meta.json expects {dtype}{list(shape)}: the store is corrupted. Delete {self.path} and "
                    "rerun the extraction.")

    def sequence(self, i: int) -> SequenceDistributions:
        """Decode sequence i (0-based over the whole store)."""
        if not 0 <= i < self.num_sequences:
            raise IndexError(f"sequence {i} out of range for a store of {self.num_sequences}")
        shard = int(np.searchsorted(self._first, i, side="right") - 1)
        a = self._shard(shard)
        lo, hi = (int(x) for x in a["offsets.npy"][i - self._first[shard]: i - self._first[shard] + 2])
        input_ids = np.asarray(a["input_ids.npy"][lo:hi], dtype=np.int64)
        topk_ids, topk_lp, gold_field = unpack_rows(self.layout, a["topk_ids.npy"][lo:hi], a["topk_nlp.npy"][lo:hi])
        in_topk, slot = gold_from_topk(input_ids, topk_ids)
        gold = np.where(in_topk, topk_lp[np.arange(hi - lo - 1), slot], gold_field[:-1]).astype(np.float32)
        ce = float(a["sequence_ce.npy"][i - self._first[shard]])
        return SequenceDistributions(input_ids, topk_ids, topk_lp, gold, ce)

    def __iter__(self):
        return (self.sequence(i) for i in range(self.num_sequences))

    def verify(self) -> None:
        """Recompute every file's sha256 and compare with meta.json; raise FusebenchError on the first mismatch."""
        for shard in self.meta["shards"]:
            for name, info in shard["files"].items():
                f = self.path / shard_name(shard["index"]) / name
                if not f.exists() or sha256_file(f) != info["sha256"]:
                    raise FusebenchError(f"{f} does not match its checksum in {self.path / 'meta.json'}: the store "
                                         f"is corrupted. Delete {self.path} and rerun the extraction.")

    def nbytes(self) -> dict[str, int]:
        """Bytes on disk by role: the model's distributions vs the tokenized corpus (ids + sequence offsets)."""
        corpus = dist = 0
        for shard in self.meta["shards"]:
            for name, info in shard["files"].items():
                if name in ("input_ids.npy", "offsets.npy"):
                    corpus += info["bytes"]
                else:
                    dist += info["bytes"]
        return {"distributions": dist, "tokenized_corpus": corpus, "meta": (self.path / "meta.json").stat().st_size}
