"""Where each token ends in the text, for both sides of an alignment, and how good an alignment's transfers are.

A source distribution may stand in for a target position only when both tokens end at the same place of the text:
both then predict what follows that place. The DTW path alone does not guarantee it (a minimum-edit-distance path
can pair Llama's `▁pat` with MPT's `Ġpatents`), so transfers are checked against these ends.

Ends are counted in UTF-8 bytes of the tokens' normalised texts (`Tokenization.texts`: `Ġ`/`▁` are spaces,
byte-fallback `<0xNN>` and partial byte-level tokens are single bytes), i.e. the running length of the decoded
token texts. Bytes rather than characters, so that the pieces of one emoji split differently by the two tokenizers
still have comparable ends. This needs only token ids, so it works on distribution stores, which keep no character
offsets.

The two concatenations usually spell the same bytes; where they do not (SentencePiece's dummy-prefix space, a
normaliser such as NFKC changing a character, special tokens), source ends are carried into the target's byte
coordinates through the matching blocks of the two byte strings (rapidfuzz's Levenshtein opcodes). A source end
that falls strictly inside a differing stretch has no counterpart: it gets the target position where the two texts
last agreed + 0.5, which never equals a target end and keeps it in place for the `offsets` aligner's sweep.
"""

from __future__ import annotations

import numpy as np
from rapidfuzz.distance import Levenshtein

from fusebench.align.tokens import Tokenization
from fusebench.align.transfer import end_matched_sources, keep_coinciding


def byte_ends(tok: Tokenization) -> tuple[np.ndarray, bytes]:
    """Each token's end (exclusive) in bytes of the concatenated normalised texts, and that concatenation."""
    pieces = [t.encode("utf-8", "surrogateescape") for t in tok.texts]
    return np.cumsum([len(p) for p in pieces], dtype=np.int64), b"".join(pieces)


def token_ends(source: Tokenization, target: Tokenization) -> tuple[np.ndarray, np.ndarray]:
    """(source ends, target ends) as float64 arrays in the target's byte coordinates (see the module docstring)."""
    src_end, a = byte_ends(source)
    tgt_end, b = byte_ends(target)
    return _carry(src_end, a, b), tgt_end.astype(np.float64)


def _carry(ends: np.ndarray, a: bytes, b: bytes) -> np.ndarray:
    """Positions in `a` -> positions in `b` through the blocks where the two byte strings agree."""
    if a == b:
        return ends.astype(np.float64)
    if a[:1] == b" " and a[1:] == b:  # SentencePiece's dummy prefix on the source side only
        return np.maximum(ends - 1, 0).astype(np.float64)
    if b[:1] == b" " and b[1:] == a:  # ... or on the target side only
        return (ends + 1).astype(np.float64)
    # latin-1 turns each byte into one character, so rapidfuzz compares bytes
    ops = Levenshtein.opcodes(a.decode("latin-1"), b.decode("latin-1"))
    equal = np.array([(o.src_start, o.src_end, o.dest_start, o.dest_end) for o in ops if o.tag == "equal"],
                     dtype=np.int64).reshape(-1, 4)
    if not len(equal):  # nothing in common: no end has a counterpart
        return np.full(len(ends), 0.5)
    k = np.searchsorted(equal[:, 0], ends, side="right") - 1  # the last equal block starting at or before each end
    found = k >= 0
    src_start, src_stop, dest_start, dest_stop = np.where(found, equal[np.maximum(k, 0)].T, 0)
    inside = found & (ends <= src_stop)
    return np.where(inside, dest_start + (ends - src_start), dest_stop + 0.5).astype(np.float64)


def transfer_sources(pairs: np.ndarray, source_ends: np.ndarray, target_ends: np.ndarray) -> np.ndarray:
    """[n_tgt] int64: the source position whose distribution target j receives along `pairs`, -1 where none does.

    j receives i's distribution where the path closes a block at (i, j) — i is the last source paired with j and j
    the last target paired with i — and the two tokens end at the same byte of the text."""
    src_of = end_matched_sources(np.asarray(pairs, dtype=np.int64), len(source_ends), len(target_ends))
    return keep_coinciding(src_of, source_ends, target_ends)


def quality(src_of: np.ndarray, source_ends: np.ndarray, target_ends: np.ndarray) -> dict[str, float | int]:
    """Coverage (share of target positions that receive a source distribution) and precision (share of those whose
    source token ends where the target token does), with the counts behind them."""
    got = np.flatnonzero(np.asarray(src_of) >= 0)
    exact = int((source_ends[src_of[got]] == target_ends[got]).sum())
    n = len(target_ends)
    return {"coverage": len(got) / n if n else 0.0, "precision": exact / len(got) if len(got) else 1.0,
            "positions": n, "received": len(got), "ends_coincide": exact}


def merge_quality(parts: list[dict]) -> dict[str, float | int]:
    """Pooled coverage and precision of several documents' `quality` figures (position-weighted)."""
    n = sum(p["positions"] for p in parts)
    got = sum(p["received"] for p in parts)
    exact = sum(p["ends_coincide"] for p in parts)
    out = {"coverage": got / n if n else 0.0, "precision": exact / got if got else 1.0,
           "positions": n, "received": got, "ends_coincide": exact}
    if any("blocks_ends_differ" in p for p in parts):  # blocks of the path that the end check turned down
        out["blocks_ends_differ"] = sum(p.get("blocks_ends_differ", 0) for p in parts)
    return out
