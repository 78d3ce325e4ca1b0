"""EM and MinED vocab maps on the real Llama-2 and MPT vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from fusebench.align import VOCAB_MAPS, VocabMap, build_vocab_map, nearest_tokens, normalize_tokens
from fusebench.errors import FusebenchError


@pytest.fixture(scope="module")
def llama_and_mpt():
    from fusebench.models.real_tokenizers import load_real_tokenizer

    return load_real_tokenizer("llama-spm"), load_real_tokenizer("mpt")


@pytest.fixture(scope="module")
def llama_to_mpt_em(llama_and_mpt):
    return build_vocab_map("em", *llama_and_mpt, cache=False)


@pytest.fixture(scope="module")
def llama_to_mpt_mined(llama_and_mpt):
    return build_vocab_map("mined", *llama_and_mpt, cache=False)


def mapped(vocab_map, source, target, token: str):
    tgt = int(vocab_map.src_to_tgt[source.convert_tokens_to_ids(token)])
    return None if tgt < 0 else target.convert_ids_to_tokens(tgt)


def test_em_matches_word_start_tokens_across_marker_conventions(llama_and_mpt, llama_to_mpt_em):
    llama, mpt = llama_and_mpt
    assert mapped(llama_to_mpt_em, llama, mpt, "▁the") == "Ġthe"
    assert mapped(llama_to_mpt_em, llama, mpt, "▁Hello") == "ĠHello"
    assert mapped(llama_to_mpt_em, llama, mpt, "the") == "the"  # word-internal stays word-internal
    assert mapped(llama_to_mpt_em, llama, mpt, "<0x0A>") == "Ċ"  # byte fallback vs byte-level newline
    assert mapped(llama_to_mpt_em, llama, mpt, "▁Jahrhundert") is None  # MPT has no such token
    assert llama_to_mpt_em.src_to_tgt.dtype == np.int32 and len(llama_to_mpt_em) == len(llama)
    assert 0.5 < llama_to_mpt_em.coverage() < 0.9


def test_em_maps_special_tokens_by_role(llama_and_mpt, llama_to_mpt_em):
    llama, mpt = llama_and_mpt
    for special in ("<s>", "</s>", "<unk>"):
        assert mapped(llama_to_mpt_em, llama, mpt, special) == "<|endoftext|>"
    reverse = build_vocab_map("em", mpt, llama, cache=False)
    assert mapped(reverse, mpt, llama, "<|endoftext|>") == "</s>"  # eos first: GPT-NeoX's document separator
    assert mapped(reverse, mpt, llama, "<|padding|>") is None
    assert mapped(reverse, mpt, llama, "Ġthe") == "▁the"


def test_mined_agrees_with_em_wherever_em_matches(llama_to_mpt_em, llama_to_mpt_mined):
    matched = llama_to_mpt_em.src_to_tgt >= 0
    assert np.array_equal(llama_to_mpt_mined.src_to_tgt[matched], llama_to_mpt_em.src_to_tgt[matched])
    assert llama_to_mpt_mined.coverage() == 1.0


def test_mined_maps_a_token_absent_from_the_target_to_its_nearest(llama_and_mpt, llama_to_mpt_mined):
    llama, mpt = llama_and_mpt
    query = normalize_tokens(["▁Jahrhundert"], "metaspace")[0]
    special = set(mpt.all_special_ids)
    targets = normalize_tokens(mpt.convert_ids_to_tokens(list(range(len(mpt)))), "byte_level")
    distances = [Levenshtein.distance(query, t) if k not in special else 10**9 for k, t in enumerate(targets)]
    got = int(llama_to_mpt_mined.src_to_tgt[llama.convert_tokens_to_ids("▁Jahrhundert")])
    assert distances[got] == min(distances) > 0
    assert got == distances.index(min(distances))  # lowest target id among equally near tokens


def test_nearest_tokens_breaks_ties_by_lowest_candidate_index(llama_and_mpt):
    llama, _ = llama_and_mpt
    texts = normalize_tokens(llama.convert_ids_to_tokens(list(range(len(llama)))), "metaspace")
    # " understandable" is 4 edits from both " understand" (id 2274) and " understanding" (id 8004)
    best, dist = nearest_tokens([" understandable"], texts)
    assert (int(best[0]), int(dist[0])) == (2274, 4)
    assert Levenshtein.distance(" understandable", texts[8004]) == 4
    best, dist = nearest_tokens(["ab", "abc", "zz"], ["a", "b", "abc"])
    assert best.tolist() == [0, 2, 0] and dist.tolist() == [1, 0, 2]


def test_vocab_map_round_trips_through_save_and_load(tmp_path, llama_and_mpt, llama_to_mpt_em):
    llama_to_mpt_em.save(tmp_path / "map")
    assert {p.name for p in (tmp_path / "map").iterdir()} == {"vocab_map.npz", "vocab_map.json"}
    loaded = VocabMap.load(tmp_path / "map", *llama_and_mpt)
    assert loaded.kind == "em" and np.array_equal(loaded.src_to_tgt, llama_to_mpt_em.src_to_tgt)


def test_vocab_map_refuses_another_tokenizer_pair(tmp_path, llama_and_mpt, llama_to_mpt_em):
    llama, mpt = llama_and_mpt
    with pytest.raises(FusebenchError, match="another tokenizer pair: the source and target vocabulary"):
        llama_to_mpt_em.check(mpt, llama)
    llama_to_mpt_em.save(tmp_path / "map")
    with pytest.raises(FusebenchError, match="the target vocabulary differs"):
        VocabMap.load(tmp_path / "map", llama, llama)


def test_vocab_map_load_explains_a_missing_map(tmp_path):
    with pytest.raises(FusebenchError, match="vocab_map.npz"):
        VocabMap.load(tmp_path / "nowhere")


def test_vocab_map_registry_names_the_valid_kinds_for_an_unknown_kind(llama_and_mpt):
    assert set(VOCAB_MAPS) == {"em", "mined", "statistics"}
    with pytest.raises(FusebenchError, match="em, mined, statistics"):
        build_vocab_map("fuzzy", *llama_and_mpt)


def test_vocab_maps_on_trained_tokenizers_are_cached_per_pair(tmp_path, monkeypatch, bpe_tokenizer_dir,
                                                              unigram_tokenizer_dir):
    from fusebench.models.tokenizers import load_tokenizer

    monkeypatch.setenv("FUSEBENCH_CACHE", str(tmp_path))
    bpe, unigram = load_tokenizer(bpe_tokenizer_dir), load_tokenizer(unigram_tokenizer_dir)
    first = build_vocab_map("mined", unigram, bpe)
    assert len([p for p in (tmp_path / "vocab_maps").glob("mined-*") if p.is_dir()]) == 1
    assert np.array_equal(build_vocab_map("mined", unigram, bpe).src_to_tgt, first.src_to_tgt)
    assert first.coverage() == 1.0 and first.src_to_tgt.max() < len(bpe)


def test_a_sentencepiece_tokenizer_maps_onto_itself_and_never_onto_its_byte_fallback_pieces(unigram_tokenizer_dir):
    """`<0x73>` and `s` normalise to the same text; the map must keep `s` (what the target emits), or KD with a
    teacher of the target's own tokenizer would push mass onto ids the target never produces."""
    import re

    import numpy as np
    from transformers import AutoTokenizer

    from fusebench.align import build_vocab_map

    tok = AutoTokenizer.from_pretrained(str(unigram_tokenizer_dir))
    raw = tok.convert_ids_to_tokens(list(range(len(tok))))
    is_byte = np.array([bool(re.match(r"^<0x[0-9A-F]{2}>$", t)) for t in raw])
    assert is_byte.sum() == 256
    for kind in ("em", "mined"):
        m = build_vocab_map(kind, tok, tok, cache=False).src_to_tgt
        ordinary = np.flatnonzero(~is_byte)
        assert (m[ordinary] == ordinary).all(), kind
        assert not is_byte[m[ordinary]].any()
        s_byte = raw.index("<0x73>")
        if "s" in raw:
            assert m[s_byte] == raw.index("s")
