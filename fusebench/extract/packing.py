"""Bit-packed rows of a distribution store (format 2): ids in exactly the bits the vocabulary needs, log-probs
companded into 7-9 bits. Why these widths keep the fusion loss within 1e-3: see fusebench/extract/store.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_RANGE, GAP_RANGE, GOLD_RANGE = 64.0, 32.0, 32.0  # nat: what the companded fields cover (clipped above)
GAP_BITS = 7


@dataclass(frozen=True)
class Layout:
    """The bit widths of one store's rows (a function of vocab_size and k, recorded in meta.json)."""

    top_k: int
    id_bits: int

    @classmethod
    def of(cls, vocab_size: int, top_k: int) -> "Layout":
        return cls(top_k, max(1, int(vocab_size - 1).bit_length()))

    @property
    def gold_bits(self) -> int:  # the id row's spare bits, at least 4
        spare = -(self.top_k * self.id_bits) % 8
        return spare if spare >= 4 else spare + 8

    @property
    def top_bits(self) -> int:   # the log-prob row's spare bits go to the top slot's precision
        return 9 + (-(9 + GAP_BITS * (self.top_k - 1)) % 8)

    @property
    def id_row_bytes(self) -> int:
        return (self.top_k * self.id_bits + self.gold_bits) // 8

    @property
    def nlp_row_bytes(self) -> int:
        return (self.top_bits + GAP_BITS * (self.top_k - 1)) // 8


def _put(rows: np.ndarray, values: np.ndarray, offset: int, width: int) -> None:
    """OR `width`-bit values into the bit field starting at bit `offset` of each row (least significant first)."""
    first, shift = divmod(offset, 8)
    v = (values.astype(np.uint64) & np.uint64((1 << width) - 1)) << np.uint64(shift)
    for b in range((shift + width + 7) // 8):
        rows[:, first + b] |= ((v >> np.uint64(8 * b)) & np.uint64(0xFF)).astype(np.uint8)


def _get(rows: np.ndarray, offset: int, width: int) -> np.ndarray:
    first, shift = divmod(offset, 8)
    v = np.zeros(rows.shape[0], np.uint64)
    for b in range((shift + width + 7) // 8):
        v |= rows[:, first + b].astype(np.uint64) << np.uint64(8 * b)
    return (v >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def _compand(x: np.ndarray, span: float, bits: int) -> np.ndarray:
    """Nats in [0, span] -> codes 0..2^bits-1, fine near 0 (where a slot's weight is large), coarse far out."""
    x = np.nan_to_num(np.asarray(x, np.float64), nan=span, posinf=span).clip(0.0, span)
    return np.rint(((1 << bits) - 1) * np.sqrt(x / span)).astype(np.uint64)


def _expand(code: np.ndarray, span: float, bits: int) -> np.ndarray:
    return span * (code.astype(np.float64) / ((1 << bits) - 1)) ** 2


def pack_rows(layout: Layout, topk_ids: np.ndarray, topk_logprobs: np.ndarray, gold_logprobs: np.ndarray,
              gold_in_topk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, k] ids and log-probs (sorted descending) + per-row gold -> ([N, id_row_bytes], [N, nlp_row_bytes]) uint8."""
    n, k = topk_ids.shape
    nlp = -topk_logprobs.astype(np.float64)
    ids_rows = np.zeros((n, layout.id_row_bytes), np.uint8)
    nlp_rows = np.zeros((n, layout.nlp_row_bytes), np.uint8)
    for j in range(k):
        _put(ids_rows, topk_ids[:, j], j * layout.id_bits, layout.id_bits)
    top = _compand(nlp[:, 0], TOP_RANGE, layout.top_bits)
    _put(nlp_rows, top, 0, layout.top_bits)
    top_nats = _expand(top, TOP_RANGE, layout.top_bits)
    for j in range(1, k):  # distances below the *stored* top, so decoding adds no second error
        _put(nlp_rows, _compand(nlp[:, j] - top_nats, GAP_RANGE, GAP_BITS), layout.top_bits + (j - 1) * GAP_BITS,
             GAP_BITS)
    last = top_nats + (_expand(_get(nlp_rows, layout.top_bits + (k - 2) * GAP_BITS, GAP_BITS), GAP_RANGE, GAP_BITS)
                       if k > 1 else 0.0)
    gold = _compand(-gold_logprobs.astype(np.float64) - last, GOLD_RANGE, layout.gold_bits)
    gold[gold_in_topk] = 0  # recovered from the matching slot instead; keep the field clean
    _put(ids_rows, gold, k * layout.id_bits, layout.gold_bits)
    return ids_rows, nlp_rows


def unpack_rows(layout: Layout, ids_rows: np.ndarray, nlp_rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """The inverse of pack_rows: ([N, k] int64 ids, [N, k] float32 log-probs, [N] float32 gold field as log p)."""
    ids_rows, nlp_rows = np.asarray(ids_rows), np.asarray(nlp_rows)
    k = layout.top_k
    ids = np.stack([_get(ids_rows, j * layout.id_bits, layout.id_bits) for j in range(k)], axis=1).astype(np.int64)
    nats = np.empty((len(nlp_rows), k), np.float64)
    nats[:, 0] = _expand(_get(nlp_rows, 0, layout.top_bits), TOP_RANGE, layout.top_bits)
    for j in range(1, k):
        gap = _get(nlp_rows, layout.top_bits + (j - 1) * GAP_BITS, GAP_BITS)
        nats[:, j] = nats[:, 0] + _expand(gap, GAP_RANGE, GAP_BITS)
    gold = nats[:, -1] + _expand(_get(ids_rows, k * layout.id_bits, layout.gold_bits), GOLD_RANGE, layout.gold_bits)
    return ids, (-nats).astype(np.float32), (-gold).astype(np.float32)


def sorted_descending(topk_ids: np.ndarray, topk_lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slots in descending log-prob order (what every backend returns; reordered here if one does not)."""
    with np.errstate(invalid="ignore"):  # -inf - -inf (two empty slots of an aligned row) is nan: not out of order
        unsorted = topk_lp.shape[1] > 1 and (np.diff(topk_lp, axis=1) > 0).any()
    if not unsorted:
        return topk_ids, topk_lp
    order = np.argsort(-topk_lp, axis=1, kind="stable")
    return np.take_along_axis(topk_ids, order, 1), np.take_along_axis(topk_lp, order, 1)


def layout_fields(layout: Layout) -> dict:
    """The widths meta.json records, so a reader can tell a store of other widths."""
    return {"id_bits": layout.id_bits, "gold_bits": layout.gold_bits, "top_bits": layout.top_bits,
            "gap_bits": GAP_BITS, "ranges_nats": [TOP_RANGE, GAP_RANGE, GOLD_RANGE]}
