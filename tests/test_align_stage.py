"""The align stage on real MPT (source) and Llama-2 (target) token stores: a source cut in the middle of a UTF-8
character is left out instead of crashing the stage, both aligners work on stores, and the quality figures land in
the aligned store's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusebench.align import build_vocab_map
from fusebench.align.corpus import AlignedStore, align_stores
from fusebench.extract.store import SequenceDistributions, StoreWriter

CJK = "日本語のテキストと絵文字🦙🎉、そして中文的句子。" * 4
PROSE = "The licensor grants you a worldwide, royalty-free license to use the patents.\n    Indented line."


@pytest.fixture(scope="module")
def mpt_and_llama():
    from fusebench.models.real_tokenizers import load_real_tokenizer

    return load_real_tokenizer("mpt"), load_real_tokenizer("llama-spm")


def _sequence(ids: list[int], vocab: int, k: int = 4) -> SequenceDistributions:
    """Plausible distributions: the true next token first, then fixed others (the transfer does not look at them)."""
    ids = np.asarray(ids, dtype=np.int64)
    nxt = np.r_[ids[1:], ids[-1]]
    top = np.stack([nxt, *[(nxt + d) % vocab for d in range(1, k)]], axis=1)
    lp = np.tile(np.log([0.7, 0.1, 0.1, 0.1][:k]).astype(np.float32), (len(ids), 1))
    return SequenceDistributions(ids, top, lp, np.full(len(ids) - 1, np.log(0.7), np.float32), float(-np.log(0.7)))


def _store(path, tok, id_lists):
    writer = StoreWriter(path, "model", "tok", len(tok), 4)
    writer.write_shard(0, [_sequence(ids, len(tok)) for ids in id_lists])
    writer.finalize()


@pytest.fixture(scope="module")
def stores(tmp_path_factory, mpt_and_llama):
    mpt, llama = mpt_and_llama
    root = tmp_path_factory.mktemp("align_stage")
    src_ids = [mpt(t, add_special_tokens=False)["input_ids"] for t in (CJK, PROSE)]
    # cut the CJK source where its last token holds only part of a character, as a source's token limit may
    cut = next(n for n in range(len(src_ids[0]) // 2, len(src_ids[0])) if mpt.decode(src_ids[0][:n]).endswith("\ufffd"))
    src_ids[0] = src_ids[0][:cut]
    _store(root / "src", mpt, src_ids)
    _store(root / "tgt", llama, [llama(t, add_special_tokens=False)["input_ids"] for t in (CJK, PROSE)])
    build_vocab_map("em", mpt, llama).save(root / "vmap")
    return root


@pytest.mark.parametrize("aligner", ["dtw", "offsets"])
def test_a_source_cut_mid_character_is_left_out_and_quality_is_recorded(stores, mpt_and_llama, tmp_path, aligner):
    mpt, llama = mpt_and_llama
    out = align_stores(aligner=aligner, fallback="next", source_store=stores / "src", target_store=stores / "tgt",
                       vocab_map=stores / "vmap", source_tokenizer=mpt, target_tokenizer=llama,
                       out_dir=tmp_path / "aligned")
    aligned = AlignedStore(out)
    assert aligned.meta["truncated_sources"] == 1 and aligned.meta["aligner"] == aligner
    assert not np.isfinite(aligned.sequence(0).ce)  # left out of the CJK sequence's fusion
    assert np.isfinite(aligned.sequence(1).ce)
    q = aligned.meta["quality"]
    assert q["precision"] == 1.0 and 0.5 < q["coverage"] < 1.0
    assert q["positions"] == len(llama(PROSE, add_special_tokens=False)["input_ids"])
    if aligner == "dtw":  # the DTW path closes blocks whose tokens end apart (▁pat / Ġpatents): turned down
        assert q["blocks_ends_differ"] > 0
    else:  # the offsets sweep closes a block exactly where ends coincide
        assert q["blocks_ends_differ"] == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["quality"] == q
