"""Vocabulary maps: for every source token id, the target token id its probability mass is moved to.

Two kinds, entries of `fusebench.align.VOCAB_MAPS`:
- `em` — exact match of the normalised token texts (`Ġthe` and `▁the` are both " the"; see
  `fusebench.align.tokens`); -1 where the target has no token with that text.
- `mined` — MinED: the target token of minimum Levenshtein distance to the source token's text (distance 0 is the
  exact match, so `mined` agrees with `em` wherever `em` has one). Distances come from rapidfuzz's bit-parallel
  `process.cdist`, in chunks of source tokens, only for tokens without an exact match; a 32000 x 50432 pair takes
  seconds. Both kinds are cached on disk per tokenizer pair (`<fusebench cache>/vocab_maps/`).

Tie-breaks (deterministic): among equally good target tokens the lowest target id wins.
Special tokens are matched by role first (eos, bos, unk, pad, in that order: GPT-NeoX's `<|endoftext|>` maps to
Llama's `</s>`), then by identical spelling among the target's special tokens; ordinary tokens never map to a
target special token. A special token with neither gets -1 under `em` and the nearest ordinary token under `mined`.

A map records a fingerprint of each tokenizer's vocabulary, and `check` refuses a pair it was not built for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusebench.align.tokens import _BYTE_FALLBACK, normalize_tokens, token_convention
from fusebench.data.packages import cache_root
from fusebench.errors import FusebenchError

_ROLES = ("eos_token_id", "bos_token_id", "unk_token_id", "pad_token_id")
_CHUNK = 256  # source tokens per cdist call: 256 x 50k int32 distances is ~50 MB


@dataclass
class VocabMap:
    """`src_to_tgt[source_id]` is the target id (int32; -1 = no match, only under `em`)."""

    kind: str
    src_to_tgt: np.ndarray
    source_fingerprint: str
    target_fingerprint: str

    def __len__(self) -> int:
        return len(self.src_to_tgt)

    def coverage(self) -> float:
        """The fraction of source tokens that have a target token."""
        return float((self.src_to_tgt >= 0).mean())

    def check(self, source_tokenizer, target_tokenizer) -> None:
        """Raise unless this map was built for exactly this (source, target) tokenizer pair."""
        got = (vocab_fingerprint(source_tokenizer), vocab_fingerprint(target_tokenizer))
        if got != (self.source_fingerprint, self.target_fingerprint):
            which = [side for side, a, b in zip(("source", "target"), got,
                                                 (self.source_fingerprint, self.target_fingerprint)) if a != b]
            raise FusebenchError(
                f"this {self.kind!r} vocab map was built for another tokenizer pair: the {' and '.join(which)} "
                f"vocabulary differs (fingerprints {got[0]}/{got[1]}, map built for "
                f"{self.source_fingerprint}/{self.target_fingerprint}). Rebuild it with "
                f"build_vocab_map({self.kind!r}, source_tokenizer, target_tokenizer)."
            )

    def save(self, path: str | Path) -> None:
        """Write `path/vocab_map.npz` (the ids) and `path/vocab_map.json` (kind, fingerprints)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "vocab_map.npz", src_to_tgt=self.src_to_tgt)
        meta = {"kind": self.kind, "source_fingerprint": self.source_fingerprint,
                "target_fingerprint": self.target_fingerprint, "source_vocab_size": len(self)}
        (path / "vocab_map.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, source_tokenizer=None, target_tokenizer=None) -> "VocabMap":
        """Read a saved map; given the tokenizers, also `check` that it was built for them."""
        path = Path(path)
        try:
            meta = json.loads((path / "vocab_map.json").read_text())
            ids = np.load(path / "vocab_map.npz")["src_to_tgt"].astype(np.int32)
        except (OSError, KeyError, ValueError) as err:
            raise FusebenchError(
                f"cannot read a vocab map from {path}: {err}. A vocab map directory holds vocab_map.npz and "
                "vocab_map.json as written by VocabMap.save; rebuild it with build_vocab_map."
            ) from None
        vocab_map = cls(meta["kind"], ids, meta["source_fingerprint"], meta["target_fingerprint"])
        if source_tokenizer is not None and target_tokenizer is not None:
            vocab_map.check(source_tokenizer, target_tokenizer)
        return vocab_map


MAP_VERSION = 2  # bump when _map_ids changes, so maps cached on disk by older code are not reused


def vocab_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's tokens in id order (what a vocab map depends on)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    spelled = "\x00".join("" if t is None else t for t in tokens)
    return hashlib.sha256(spelled.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def build_em_map(source_tokenizer, target_tokenizer, cache: bool = True) -> VocabMap:
    """Exact match of normalised token texts; -1 where the target has no such token."""
    return _build("em", source_tokenizer, target_tokenizer, cache)


def build_mined_map(source_tokenizer, target_tokenizer, cache: bool = True) -> VocabMap:
    """Minimum edit distance (MinED): every source token gets its nearest target token. Cached on disk."""
    return _build("mined", source_tokenizer, target_tokenizer, cache)


def nearest_tokens(queries: list[str], candidates: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the index of the candidate at minimum Levenshtein distance (lowest index among ties) and
    that distance."""
    best = np.empty(len(queries), dtype=np.int32)
    dist = np.empty(len(queries), dtype=np.int32)
    for start in range(0, len(queries), _CHUNK):
        d = process.cdist(queries[start:start + _CHUNK], candidates, scorer=Levenshtein.distance,
                          dtype=np.int32, workers=1)
        best[start:start + _CHUNK] = d.argmin(axis=1)  # argmin returns the first (lowest-index) minimum
        dist[start:start + _CHUNK] = d.min(axis=1)
    return best, dist


def _build(kind: str, source_tokenizer, target_tokenizer, use_cache: bool) -> VocabMap:
    src_fp, tgt_fp = vocab_fingerprint(source_tokenizer), vocab_fingerprint(target_tokenizer)
    if not use_cache:
        return VocabMap(kind, _map_ids(kind, source_tokenizer, target_tokenizer), src_fp, tgt_fp)
    cache = cache_root() / "vocab_maps" / f"{kind}-v{MAP_VERSION}-{src_fp}-{tgt_fp}"
    if (cache / "vocab_map.json").exists():
        return VocabMap.load(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if (cache / "vocab_map.json").exists():
            return VocabMap.load(cache)
        vocab_map = VocabMap(kind, _map_ids(kind, source_tokenizer, target_tokenizer), src_fp, tgt_fp)
        vocab_map.save(cache)
    return vocab_map


def _map_ids(kind: str, source_tokenizer, target_tokenizer) -> np.ndarray:
    src_texts = _vocab_texts(source_tokenizer)
    tgt_texts = _vocab_texts(target_tokenizer)
    src_special, tgt_special = set(source_tokenizer.all_special_ids), set(target_tokenizer.all_special_ids)
    out = np.full(len(src_texts), -1, dtype=np.int32)

    for role in _ROLES:
        s, t = getattr(source_tokenizer, role, None), getattr(target_tokenizer, role, None)
        if s is not None and t is not None and out[s] < 0:
            out[s] = t
    tgt_special_by_name = {}
    for t in sorted(tgt_special):
        tgt_special_by_name.setdefault(target_tokenizer.convert_ids_to_tokens(t), t)
    for s in src_special:
        if out[s] < 0:
            out[s] = tgt_special_by_name.get(source_tokenizer.convert_ids_to_tokens(s), -1)

    # Byte-fallback pieces (<0x73>) normalise to the same text as the ordinary token ("s"), but a SentencePiece
    # tokenizer only emits them for characters it has no piece for. Candidates are ordered ordinary tokens first,
    # then byte pieces, each by ascending id, so ties (exact or nearest) go to the token the target really uses.
    tgt_raw = target_tokenizer.convert_ids_to_tokens(list(range(len(tgt_texts))))
    ordinary_tgt = sorted((t for t in range(len(tgt_texts)) if t not in tgt_special),
                          key=lambda t: (bool(_BYTE_FALLBACK.match(tgt_raw[t] or "")), t))
    by_text: dict[str, int] = {}
    for t in ordinary_tgt:  # in preference order, so setdefault keeps the preferred id per text
        by_text.setdefault(tgt_texts[t], t)
    for s, text in enumerate(src_texts):
        if s not in src_special:
            out[s] = by_text.get(text, -1)

    if kind == "mined":
        todo = np.flatnonzero(out < 0)
        nearest, _ = nearest_tokens([src_texts[s] for s in todo], [tgt_texts[t] for t in ordinary_tgt])
        out[todo] = np.asarray(ordinary_tgt, dtype=np.int32)[nearest]
    return out


def _vocab_texts(tokenizer) -> list[str]:
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return normalize_tokens(["" if t is None else t for t in tokens], token_convention(tokenizer))
