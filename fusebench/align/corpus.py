"""Align a source's whole distribution store to the target's sequences: the `align` stage.

For each training sequence (the same text chunk for both models): align the two tokenizations (`dtw` / `offsets`,
both from token ids), move the source's top-k into target positions and ids through the vocab map (`transfer.py`;
only between tokens that end at the same byte of the text), one pure call per sequence (`document.py`), and write
the result as an *aligned store*: per shard, `.npy` files of target-space ids and log-probs, bit-packed as in a
distribution store (fusebench/extract/packing.py: ids in bits(vocab) bits, the largest value marking an empty slot;
slots in descending log-prob order, companded), the source's own per-sequence CE and how many tokens it averages
over: 32 B/token at k = 10 for a 151,936-id target (fp16 + uint32 took 60). Shards are written atomically
(temp dir + rename), so a killed alignment resumes at the first missing shard. Each shard keeps its alignment
figures (`quality.json`); `meta.json` pools them: `quality.coverage` (share of target positions that received a
source distribution) and `quality.precision` (share of those whose tokens end at the same byte: 1 by construction).

A source whose tokens were cut short by its maximum length covers less text than the target's sequence (possibly
ending in the middle of a UTF-8 character); such a sequence is marked `valid = 0` and the fusion leaves that source
out for it (counted and logged, never guessed).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fusebench.align import parallel
from fusebench.align.transfer import AlignedDistributions
from fusebench.errors import FusebenchError
from fusebench.extract.packing import Layout, pack_rows, sorted_descending, unpack_rows
from fusebench.extract.store import DistributionStore

log = logging.getLogger("fusebench")
SHARD = 256
FORMAT_VERSION = 3


def _text(tokenizer, ids: np.ndarray, drop: tuple[str, ...] = ()) -> str:
    # compare texts as the models saw them: NFKC (the unigram tokenizer normalises) and without whitespace, which
    # tokenizers may drop or mark differently at sequence edges
    # without special tokens: packed chunks hold each model's own EOS between documents ("</s>", "<|endoftext|>"),
    # and a chat chunk holds the pivot's template tokens ("<|im_end|>"), which a source reads as plain characters:
    # `drop` removes both tokenizers' special-token spellings from both texts
    text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
    for spelling in drop:
        text = text.replace(spelling, "")
    return "".join(unicodedata.normalize("NFKC", text).split())


def _special_spellings(*tokenizers) -> tuple[str, ...]:
    """Every special token's text of these tokenizers, longest first (so "<|im_end|>" goes before a "<|" prefix)."""
    return tuple(sorted({t for tok in tokenizers for t in tok.all_special_tokens if t}, key=len, reverse=True))


def _cover_model_vocab(src_to_tgt: np.ndarray, model_vocab: int) -> np.ndarray:
    """The map extended to every id the source *model* can emit: models pad their vocabulary past the tokenizer's
    (MPT-7B: 50432 rows for 50277 tokens), and those ids stand for no text, so they map to nothing (-1)."""
    if model_vocab <= len(src_to_tgt):
        return src_to_tgt
    return np.concatenate([src_to_tgt, np.full(model_vocab - len(src_to_tgt), -1, src_to_tgt.dtype)])


def align_stores(*, aligner: str, fallback: str, source_store: Path, target_store: Path, vocab_map: Path,
                 source_tokenizer, target_tokenizer, out_dir: Path, workers: int | None = None) -> Path:
    """Align every sequence of the stores. Under a multi-process launch each rank aligns every W-th missing shard,
    and within a rank the documents go to `workers` local processes (default: `parallel.default_workers`); the
    store written is the same whatever the split (one pure function per document)."""
    from fusebench.align import VocabMap, get_aligner
    from fusebench.align.ends import merge_quality

    get_aligner(aligner)  # an unknown name fails before any work
    src, tgt = DistributionStore.open(source_store), DistributionStore.open(target_store)
    if len(src) != len(tgt):
        raise FusebenchError(f"the source store {source_store} holds {len(src)} sequences but the target's "
                             f"{target_store} holds {len(tgt)}: they were extracted from different chunks. Rerun both "
                             "extractions on the same chunks stage.")
    vmap = VocabMap.load(vocab_map, source_tokenizer, target_tokenizer)
    src_to_tgt = _cover_model_vocab(vmap.src_to_tgt, src.vocab_size)
    counts = _alignment_counts(vocab_map) if aligner == "statistics" else None
    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = (len(tgt) + SHARD - 1) // SHARD
    pending = [k for k in range(num_shards) if not (out_dir / f"shard-{k:05d}" / "done").exists()]
    parallel.barrier()  # every rank has listed the missing shards before any is written: all split them alike
    mine = parallel.rank_share(pending)
    job = functools.partial(_align_one, src, tgt, source_tokenizer, target_tokenizer, src_to_tgt, aligner, fallback,
                            counts)
    docs = [i for k in mine for i in range(k * SHARD, min(len(tgt), (k + 1) * SHARD))]
    results = parallel.ordered_map(job, docs, workers or parallel.default_workers())
    for shard in tqdm(mine, desc=f"align ({aligner})", unit="shard", disable=parallel.world()[0] != 0):
        got = [next(results) for _ in range(min(len(tgt), (shard + 1) * SHARD) - shard * SHARD)]
        _write_shard(out_dir, shard, [g[1] for g in got], Layout.of(tgt.vocab_size + 1, src.top_k),
                     [g[0] for g in got], [g[2] for g in got])
    parallel.barrier()  # every rank's shards are written
    if parallel.world()[0] != 0:
        return out_dir
    per_shard = [_shard_quality(out_dir / f"shard-{k:05d}") for k in range(num_shards)]
    invalid = sum(q.get("cut_short", 0) for q in per_shard)
    quality = merge_quality([q for q in per_shard if "positions" in q])
    (out_dir / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "num_sequences": len(tgt),
                                                   "id_space": tgt.vocab_size + 1, "top_k": src.top_k,
                                                   "num_shards": num_shards, "aligner": aligner, "fallback": fallback,
                                                   "truncated_sources": invalid, "quality": quality}))
    log.info("align (%s): coverage %.1f%%, precision %.1f%% (%d blocks turned down: ends differ)", aligner,
             100 * quality["coverage"], 100 * quality["precision"], quality.get("blocks_ends_differ", 0))
    if invalid:
        log.warning("align: %d of %d sequences were cut short by the source's maximum length; the source is left "
                    "out of their fusion", invalid, len(tgt))
    return out_dir


def _alignment_counts(vocab_map: Path):
    """The corpus counts a `statistics` vocab map was built from (saved beside it by its stage)."""
    from fusebench.align.statistics import COUNTS_FILE

    path = Path(vocab_map) / COUNTS_FILE
    if not path.is_file():
        raise FusebenchError(f"the 'statistics' aligner weights blocks by corpus alignment counts, which {path} "
                             "should hold: set fusion.vocab_map to 'statistics' too (its stage counts them).")
    import scipy.sparse

    return scipy.sparse.load_npz(path).tocsr()


def _align_one(src, tgt, source_tokenizer, target_tokenizer, src_to_tgt, aligner: str, fallback: str, counts,
               i: int):
    """Document i: (target length, aligned distributions or None when the source was cut short, figures). Pure:
    reads the stores and returns, so any split over processes gives the same store."""
    from fusebench.align import tokenization_from_ids
    from fusebench.align.document import align_document

    s, t = src.sequence(i), tgt.sequence(i)
    drop = _special_spellings(source_tokenizer, target_tokenizer)
    doc = align_document(s, tokenization_from_ids(source_tokenizer, s.input_ids),
                         tokenization_from_ids(target_tokenizer, t.input_ids), src_to_tgt, aligner=aligner,
                         fallback=fallback, source_text=_text(source_tokenizer, s.input_ids, drop),
                         target_text=_text(target_tokenizer, t.input_ids, drop), counts=counts)
    return len(t.input_ids), doc.aligned, doc.quality or {"cut_short": 1}


def _shard_quality(shard_dir: Path) -> dict:
    """A finished shard's summed alignment figures (counts only; shards from before quality.json count nothing)."""
    path = shard_dir / "quality.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _sum_figures(figures: list[dict]) -> dict:
    keys = ("positions", "received", "ends_coincide", "blocks_ends_differ", "cut_short")
    out = {key: sum(f.get(key, 0) for f in figures) for key in keys}
    return out if out["positions"] else {"cut_short": out["cut_short"]}


def _write_shard(out_dir: Path, shard: int, rows: list, layout: Layout, lengths: list[int],
                 figures: list[dict] | None = None) -> None:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    k, empty = layout.top_k, (1 << layout.id_bits) - 1  # the largest id the field holds marks an empty slot
    ids = np.full((offsets[-1], k), empty, np.int64)
    lps = np.full((offsets[-1], k), -np.inf, np.float32)
    ce = np.full(len(rows), np.inf, np.float32)
    npred = np.zeros(len(rows), np.int32)
    for r, (row, lo) in enumerate(zip(rows, offsets[:-1])):
        if row is None:
            continue
        n = len(row.input_ids)
        ids[lo:lo + n, :row.topk_ids.shape[1]] = np.where(row.topk_ids < 0, empty, row.topk_ids)
        lps[lo:lo + n, :row.topk_ids.shape[1]] = row.topk_logprobs
        ce[r], npred[r] = row.sequence_ce, row.num_predicted
    ids, lps = sorted_descending(ids, lps)  # empty slots (-inf) last
    no_gold = np.ones(len(ids), bool)  # an aligned store keeps no gold log-prob
    ids, lps = pack_rows(layout, ids, lps, np.zeros(len(ids), np.float32), no_gold)
    tmp = out_dir / f".shard-{shard:05d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, arr in (("offsets", offsets), ("ids", ids), ("logprobs", lps), ("ce", ce), ("num_predicted", npred)):
        np.save(tmp / f"{name}.npy", arr)
    (tmp / "quality.json").write_text(json.dumps(_sum_figures(figures or [])))
    (tmp / "done").write_text("ok")
    final = out_dir / f"shard-{shard:05d}"
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)


@dataclass
class AlignedSequence:
    ids: np.ndarray        # [T, k] int64 target ids, -1 empty
    logprobs: np.ndarray   # [T, k] float32, -inf empty
    ce: float              # the source's own per-sequence CE (inf: not valid for this sequence)
    num_predicted: int


class AlignedStore:
    """Read side of the aligned store (memory-mapped shards)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise FusebenchError(f"{self.path} is not a finished aligned store (no meta.json); rerun the align stage.")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise FusebenchError(f"{self.path} was written by another aligned-store format "
                                 f"({self.meta.get('format_version')}; this fusebench reads {FORMAT_VERSION}, "
                                 "bit-packed); delete it and rerun the align stage.")
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self.layout = Layout.of(int(self.meta["id_space"]), int(self.meta["top_k"]))

    def __len__(self) -> int:
        return int(self.meta["num_sequences"])

    def sequence(self, i: int) -> AlignedSequence:
        shard, r = divmod(i, SHARD)
        if shard not in self._cache:
            d = self.path / f"shard-{shard:05d}"
            self._cache[shard] = {n: np.load(d / f"{n}.npy", mmap_mode="r")
                                  for n in ("offsets", "ids", "logprobs", "ce", "num_predicted")}
        a = self._cache[shard]
        lo, hi = a["offsets"][r], a["offsets"][r + 1]
        ids, logprobs, _ = unpack_rows(self.layout, a["ids"][lo:hi], a["logprobs"][lo:hi])
        empty = ids == (1 << self.layout.id_bits) - 1
        ids[empty], logprobs[empty] = -1, -np.inf  # back to transfer.py's empty slot
        return AlignedSequence(ids, logprobs, float(a["ce"][r]), int(a["num_predicted"][r]))
