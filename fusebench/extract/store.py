"""The distribution store: every token's top-k next-token log-probs of one model, in 40 bytes at k = 10.

What position t holds
---------------------
For a tokenized sequence `input_ids[0..T-1]`, position t holds the model's distribution *after reading tokens
0..t*, i.e. the distribution that predicts token t+1. All T positions are stored (the last one predicts what follows
the sequence and is what the aligners may need), but only positions 0..T-2 have a gold next token, so
`gold_logprobs` has T-1 entries: `gold_logprobs[t] = log p(input_ids[t+1] | input_ids[..t])`. `sequence_ce` is the
mean of `-gold_logprobs`, computed in float32 from the unquantised log-probs before anything is stored.

Layout on disk
--------------
    DIR/meta.json                 format_version, fingerprints, vocab_size, top_k, shard list with sha256 per file
    DIR/shard-00000/shard.json    this shard's counts and checksums (finalize() gathers these into meta.json)
    DIR/shard-00000/input_ids.npy [N] tokenized corpus (all sequences of the shard, concatenated)
    DIR/shard-00000/offsets.npy   [S+1] int64: sequence s is rows offsets[s]:offsets[s+1]
    DIR/shard-00000/topk_ids.npy  [N, k] smallest unsigned dtype that holds vocab_size (uint16 up to 65536)
    DIR/shard-00000/topk_nlp.npy  [N, k] uint16: packed -log-prob magnitudes (below)
    DIR/shard-00000/sequence_ce.npy [S] float32

Every file is a plain `.npy`, opened with `np.load(mmap_mode="r")`, so a store larger than memory reads lazily.
A shard directory appears by an atomic rename of a finished temp directory: it is either complete or absent.

Packing the log-probs (why 40 bytes suffice)
--------------------------------------------
k ids cost 2k bytes and k fp16 log-probs 2k more, so the gold log-prob must ride for free. Log-probs are <= 0, so we
store the magnitude -log p as fp16 and its sign bit is free: k spare bits per position. When the gold next token is
in the top-k (its id equals input_ids[t+1]), its log-prob is read back from that slot (fp16 precision, relative
error <= 2^-11). When it is not, the k spare bits hold -log p(gold) as fixed point with step 1/16 nat (k = 10 gives
range [0, 64) nat, clipped at the top): precise to +-1/32 nat. The exact per-sequence CE is stored separately.
The bits of the spare field go slot by slot, slot j holding bit j; with k < 10 the range shrinks to 2^k / 16 nat.
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

FORMAT_VERSION = 1
GOLD_STEP = 1.0 / 16.0  # nat per unit of the fixed-point gold field
MAX_GOLD_BITS = 16      # never use more spare bits than this, even at large k
FILES = ("input_ids.npy", "offsets.npy", "topk_ids.npy", "topk_nlp.npy", "sequence_ce.npy")
_SIGN = np.uint16(0x8000)


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


def pack_logprobs(topk_logprobs: np.ndarray, gold_logprobs: np.ndarray, gold_in_topk: np.ndarray) -> np.ndarray:
    """[N, k] float log-probs (+ per-row gold, used where not in the top-k) -> [N, k] uint16 packed words."""
    k = topk_logprobs.shape[1]
    # fp16 overflow (> 65504 nat) becomes inf, which is what such a log-prob means; masking drops the sign of -0.0
    with np.errstate(over="ignore"):
        packed = (-topk_logprobs.astype(np.float32)).astype(np.float16).view(np.uint16) & np.uint16(0x7FFF)
    bits = min(k, MAX_GOLD_BITS)
    code = np.rint(-gold_logprobs.astype(np.float64) / GOLD_STEP).clip(0, (1 << bits) - 1).astype(np.uint32)
    code[gold_in_topk] = 0  # recovered from the matching slot instead; keep the field clean
    for j in range(bits):
        packed[:, j] |= (((code >> j) & 1).astype(np.uint16) << 15)
    return packed


def unpack_logprobs(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, k] packed words -> ([N, k] float32 log-probs, [N] float32 fixed-point gold field in nats, as -log p)."""
    packed = np.asarray(packed)
    logprobs = -(packed & np.uint16(0x7FFF)).view(np.float16).astype(np.float32)
    bits = min(packed.shape[1], MAX_GOLD_BITS)
    code = np.zeros(packed.shape[0], dtype=np.uint32)
    for j in range(bits):
        code |= ((packed[:, j] >> 15).astype(np.uint32) << j)
    return logprobs, code.astype(np.float32) * np.float32(GOLD_STEP)


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
                       "num_shards": num_shards, "gold_step": GOLD_STEP}
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
        arrays = {"input_ids.npy": input_ids.astype(dt), "offsets.npy": offsets,
                  "topk_ids.npy": topk_ids.astype(dt), "topk_nlp.npy": pack_logprobs(topk_lp, gold, in_topk),
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
            raise FusebenchError(
                f"{path} was written in store format version {meta.get('format_version')}, but this fusebench reads "
                f"version {FORMAT_VERSION}. Delete {path} and rerun the extraction.")
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
                    "topk_ids.npy": ((tokens, k), ids), "topk_nlp.npy": ((tokens, k), "uint16"),
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
        topk_ids = np.asarray(a["topk_ids.npy"][lo:hi], dtype=np.int64)
        topk_lp, gold_field = unpack_logprobs(a["topk_nlp.npy"][lo:hi])
        in_topk, slot = gold_from_topk(input_ids, topk_ids)
        gold = np.where(in_topk, topk_lp[np.arange(hi - lo - 1), slot], -gold_field[:-1]).astype(np.float32)
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
