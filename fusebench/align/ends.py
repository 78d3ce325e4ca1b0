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
coordinates through the matching blocks of the two byte strings (rapidfuzz's Levenshtein opcodes, on a window
around each difference). A source end
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
    blocks = _local_equal_blocks(a, b)
    equal = np.array(blocks if blocks is not None else _equal_blocks(a, b), dtype=np.int64).reshape(-1, 4)
    if not len(equal):  # nothing in common: no end has a counterpart
        return np.full(len(ends), 0.5)
    k = np.searchsorted(equal[:, 0], ends, side="right") - 1  # the last equal block starting at or before each end
    found = k >= 0
    src_start, src_stop, dest_start, dest_stop = np.where(found, equal[np.maximum(k, 0)].T, 0)
    inside = found & (ends <= src_stop)
    return np.where(inside, dest_start + (ends - src_start), dest_stop + 0.5).astype(np.float64)


def _equal_blocks(a: bytes, b: bytes) -> list[tuple[int, int, int, int]]:
    """(src_start, src_end, dest_start, dest_end) of the blocks a minimum edit script keeps (rapidfuzz; latin-1 turns
    each byte into one character, so it compares bytes)."""
    ops = Levenshtein.opcodes(a.decode("latin-1"), b.decode("latin-1"))
    return [(o.src_start, o.src_end, o.dest_start, o.dest_end) for o in ops if o.tag == "equal"]


_WINDOW, _RESYNC = 64, 8  # bytes diffed around a difference; length of an equal run that counts as back in step


def _local_equal_blocks(a: bytes, b: bytes) -> list[tuple[int, int, int, int]] | None:
    """The same blocks for strings that differ only here and there (special tokens' spellings, dummy-prefix spaces):
    runs of equal bytes are skipped at memcmp speed and only a window around each difference is diffed, until a run
    of `_RESYNC` equal bytes; a whole-string edit script costs O(n·m / 64), ~50 ms for two 2048-token documents.
    None when a difference does not resolve within the window (the caller then diffs the whole strings)."""
    blocks, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        n = _common_prefix(a, b, i, j)
        if n and blocks and blocks[-1][1] == i and blocks[-1][3] == j:  # continues the window's last block
            blocks[-1] = (blocks[-1][0], i + n, blocks[-1][2], j + n)
        elif n:
            blocks.append((i, i + n, j, j + n))
        i, j = i + n, j + n
        if i >= len(a) or j >= len(b):
            break
        wa, wb = a[i:i + _WINDOW], b[j:j + _WINDOW]
        ends_here = i + _WINDOW >= len(a) and j + _WINDOW >= len(b)
        local = _equal_blocks(wa, wb)
        k = next((k for k, e in enumerate(local) if e[1] - e[0] >= _RESYNC or (ends_here and e[1] == len(wa))), None)
        if k is None:
            if ends_here:  # the strings end inside this window without agreeing again
                return blocks + [(i + p, i + q, j + r, j + t) for p, q, r, t in local]
            return None
        blocks += [(i + p, i + q, j + r, j + t) for p, q, r, t in local[:k + 1]]  # short ones too, as a whole diff
        i, j = i + local[k][1], j + local[k][3]
    return blocks


def _common_prefix(a: bytes, b: bytes, i: int, j: int) -> int:
    """Length of the common prefix of a[i:] and b[j:]."""
    n, step = 0, 256
    limit = min(len(a) - i, len(b) - j)
    while step:
        while n + step <= limit and a[i + n:i + n + step] == b[j + n:j + n + step]:
            n += step
        step //= 4
    return n


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
    return _rates(len(target_ends), len(got), int((source_ends[src_of[got]] == target_ends[got]).sum()))


def _rates(n: int, got: int, exact: int) -> dict[str, float | int]:
    return {"coverage": got / n if n else 0.0, "precision": exact / got if got else 1.0,
            "positions": n, "received": got, "ends_coincide": exact}


def merge_quality(parts: list[dict]) -> dict[str, float | int]:
    """Pooled coverage and precision of several documents' `quality` figures (position-weighted)."""
    out = _rates(*(sum(p[key] for p in parts) for key in ("positions", "received", "ends_coincide")))
    if any("blocks_ends_differ" in p for p in parts):  # blocks of the path that the end check turned down
        out["blocks_ends_differ"] = sum(p.get("blocks_ends_differ", 0) for p in parts)
    return out
