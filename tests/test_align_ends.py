"""A distribution moves only between tokens that end at the same place of the text: real Llama-2 / MPT tokens.

The independent check is the tokenizers' own character offsets (`offset_mapping`), which fusebench's transfer does
not use: it works from token ids alone (running byte lengths of the decoded token texts).
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from fusebench.align import align_by_offsets, tokenization_from_ids, tokenize_for_alignment
from fusebench.align.dtw import dtw
from fusebench.align.ends import quality, token_ends, transfer_sources
from fusebench.align.tokens import Tokenization
from fusebench.align.transfer import end_matched_sources
from fusebench.cli import main

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def llama_and_mpt():
    from fusebench.models.real_tokenizers import load_real_tokenizer

    return load_real_tokenizer("llama-spm"), load_real_tokenizer("mpt")


def _texts() -> dict[str, str]:
    """Prose (the Python license) and code (textwrap.py), 3000 characters each, from the stdlib on every machine."""
    return {"prose": (STDLIB / "LICENSE.txt").read_text(encoding="utf-8")[:3000],
            "code": (STDLIB / "textwrap.py").read_text(encoding="utf-8")[:3000]}


def _char_ends(tok: Tokenization) -> np.ndarray:
    return np.array([end for _, end in tok.offsets])


@pytest.mark.parametrize("kind", ["prose", "code"])
@pytest.mark.parametrize("direction", ["mpt->llama-2", "llama-2->mpt"])
def test_align_json_transfers_only_between_tokens_ending_at_the_same_character(capsys, tmp_path, llama_and_mpt,
                                                                                kind, direction):
    llama, mpt = llama_and_mpt
    source_name, target_name = direction.split("->")
    text = _texts()[kind]
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    assert main(["align", "--source", source_name, "--target", target_name, "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    toks = {"llama-2": llama, "mpt": mpt}
    source = tokenize_for_alignment(toks[source_name], text)
    target = tokenize_for_alignment(toks[target_name], text)
    transfer = np.array(out["transfer"])
    assert len(transfer) == len(target) == len(out["target_tokens"])
    got = transfer >= 0
    # the tokenizers' own character offsets agree: every transfer is between tokens ending at the same character
    assert (_char_ends(source)[transfer[got]] == _char_ends(target)[got]).all()
    assert out["precision"] == 1.0 and out["coverage"] == pytest.approx(got.mean())
    assert out["coverage"] > 0.6
    # the same DTW path read the old way (every block's last pair transfers) does not have that property
    blocks = end_matched_sources(np.array(out["pairs"], dtype=np.int64), len(source), len(target))
    closed = blocks >= 0
    old_precision = (_char_ends(source)[blocks[closed]] == _char_ends(target)[closed]).mean()
    assert old_precision < 0.95


def test_the_issue_examples_fall_back(llama_and_mpt):
    llama, mpt = llama_and_mpt
    # Llama's ▁pat (next: ents) must not get MPT's distribution after Ġpatents (which predicts " to")
    text = "the rights to patents to use"
    s, t = tokenize_for_alignment(mpt, text), tokenize_for_alignment(llama, text)
    assert t.tokens[3:5] == ["▁pat", "ents"] and s.tokens[3] == "Ġpatents"
    src_of = transfer_sources(dtw(s, t).pairs, *token_ends(s, t))
    assert src_of[3] == -1 and src_of[4] == 3
    # Llama's three-space ▁▁▁ of an indented line must not get the distribution after MPT's four spaces
    text = "def f(x):\n    return x\n"
    s, t = tokenize_for_alignment(mpt, text), tokenize_for_alignment(llama, text)
    three = t.tokens.index("▁▁▁")
    assert s.tokens[6] == "    "
    assert transfer_sources(dtw(s, t).pairs, *token_ends(s, t))[three] == -1


def test_ends_from_ids_match_character_offsets_through_dummy_prefix_bytes_and_emoji(llama_and_mpt):
    llama, mpt = llama_and_mpt
    text = " Héllo 🦙 wörld,\n\tdone 日本語"
    for a, b in ((llama, mpt), (mpt, llama)):
        s, t = tokenize_for_alignment(a, text), tokenize_for_alignment(b, text)
        s_ids = tokenization_from_ids(a, s.ids)  # no offsets: what the align stage has
        t_ids = tokenization_from_ids(b, t.ids)
        src_end, tgt_end = token_ends(s_ids, t_ids)
        # two tokens end at the same byte exactly when they end at the same character, unless one of them ends
        # inside a multi-byte character (then the character offsets of its pieces all name that character's end)
        whole = lambda tok: np.array([not any("\udc80" <= ch <= "\udcff" for ch in x) for x in tok.texts])
        s_whole, t_whole = whole(s_ids), whole(t_ids)
        same_byte = src_end[:, None] == tgt_end[None, :]
        same_char = _char_ends(s)[:, None] == _char_ends(t)[None, :]
        both_whole = s_whole[:, None] & t_whole[None, :]
        np.testing.assert_array_equal(same_byte[both_whole], same_char[both_whole])
        assert (same_char | ~same_byte).all()  # the same byte is always the same character


def test_ends_are_carried_across_a_normaliser_that_changes_the_text():
    # the source spells "ﬁ" (3 bytes, as 3 byte-fallback pieces), the target "fi" (2 bytes, NFKC): ends inside the
    # ligature have no counterpart, the end after it and later ends line up
    source = Tokenization(["▁a", "<0xEF>", "<0xAC>", "<0x81>", "ne", "▁day"], convention="metaspace")
    target = Tokenization([" a", "fi", "ne", " day"], convention="plain")
    src_end, tgt_end = token_ends(source, target)
    assert tgt_end.tolist() == [2, 4, 6, 10]
    assert src_end.tolist() == [2, 2.5, 2.5, 4, 6, 10]
    src_of = transfer_sources(np.array([(0, 0), (1, 1), (2, 1), (3, 1), (4, 2), (5, 3)]), src_end, tgt_end)
    assert src_of.tolist() == [0, 3, 4, 5]


def test_offsets_aligner_works_from_ids_and_covers_every_coinciding_end(llama_and_mpt):
    llama, mpt = llama_and_mpt
    text = _texts()["code"]
    s = tokenization_from_ids(mpt, mpt(text, add_special_tokens=False)["input_ids"])
    t = tokenization_from_ids(llama, llama(text, add_special_tokens=False)["input_ids"])
    src_end, tgt_end = token_ends(s, t)
    by_offsets = transfer_sources(align_by_offsets(s, t).pairs, src_end, tgt_end)
    by_dtw = transfer_sources(dtw(s, t).pairs, src_end, tgt_end)
    # every target token that ends where some source token ends receives that source's distribution
    expected = np.where(np.isin(tgt_end, src_end), np.searchsorted(src_end, tgt_end, side="right") - 1, -1)
    np.testing.assert_array_equal(by_offsets, expected)
    q_off, q_dtw = quality(by_offsets, src_end, tgt_end), quality(by_dtw, src_end, tgt_end)
    assert q_off["precision"] == q_dtw["precision"] == 1.0
    assert q_off["coverage"] >= q_dtw["coverage"]


def test_windowed_diff_equals_the_whole_string_diff_on_packed_documents(llama_and_mpt):
    """Packed chunks hold each model's own EOS between documents, so the two texts differ at every boundary: the
    windowed diff must keep exactly the blocks a whole-string edit script keeps, or hand over to it."""
    from fusebench.align import ends

    llama, mpt = llama_and_mpt
    docs = [text[:1500] for text in _texts().values()] + [" Héllo 🦙 wörld,\n\tdone 日本語 ﬁne"]
    ids = {tok: [i for d in docs for i in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
           for tok in (llama, mpt)}
    for a, b in ((llama, mpt), (mpt, llama)):
        _, sa = ends.byte_ends(tokenization_from_ids(a, ids[a]))
        _, sb = ends.byte_ends(tokenization_from_ids(b, ids[b]))
        assert sa != sb
        assert ends._local_equal_blocks(sa, sb) == ends._equal_blocks(sa, sb)
    # a difference longer than the window is left to the whole-string diff
    long_a, long_b = b"same start " + b"x" * 200 + b" same end", b"same start " + b"y" * 150 + b" same end"
    assert ends._local_equal_blocks(long_a, long_b) is None
    source = Tokenization(["same", " start", " " + "x" * 200, " same", " end"], convention="plain")
    target = Tokenization(["same", " start", " " + "y" * 150, " same", " end"], convention="plain")
    src_end, tgt_end = token_ends(source, target)
    assert src_end.tolist() == tgt_end.tolist()  # the differing tokens still end at the same place: before " same"
