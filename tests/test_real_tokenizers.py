"""The real Llama-2 and MPT tokenizers rebuilt from llama.cpp's vocab-only GGUFs reproduce llama.cpp's own ids."""

from __future__ import annotations

import pytest

from fusebench.errors import FusebenchError
from fusebench.models.real_tokenizers import (check_against_llama_cpp, llama_cpp_expectations, load_real_tokenizer)


@pytest.mark.parametrize("name", ["mpt", "llama-spm", "gpt-2"])
def test_real_tokenizer_reproduces_llama_cpp_expected_ids(name):
    tok = load_real_tokenizer(name)
    cases = llama_cpp_expectations(name)
    assert len(cases) >= 40  # llama.cpp's test strings: whitespace runs, emoji, Cyrillic, code, ...
    assert check_against_llama_cpp(name, tok) == []


def test_mpt_tokenizer_has_gpt_neox_ids():
    mpt = load_real_tokenizer("mpt")
    assert len(mpt) == 50432  # MPT's embedding rows, padding included
    assert mpt(" the", add_special_tokens=False)["input_ids"] == [253]
    assert mpt("Hello", add_special_tokens=False)["input_ids"] == [12092]
    assert mpt("   ", add_special_tokens=False)["input_ids"] == [50275]  # runs of spaces are added tokens
    assert mpt.eos_token == "<|endoftext|>" and mpt.eos_token_id == 0
    assert mpt.decode(mpt(" Äpfel 🦙\n", add_special_tokens=False)["input_ids"]) == " Äpfel 🦙\n"


def test_gpt_neox_and_mpt_share_one_vocabulary():
    neox, mpt = load_real_tokenizer("gpt-neox"), load_real_tokenizer("mpt")
    assert neox.get_vocab() == mpt.get_vocab()


def test_llama_tokenizer_keeps_sentencepiece_dummy_prefix_and_byte_fallback():
    llama = load_real_tokenizer("llama-2")  # alias of llama-spm
    assert len(llama) == 32000 and llama.bos_token == "<s>" and llama.eos_token == "</s>"
    ids = llama(" Hello\n", add_special_tokens=False)["input_ids"]
    assert llama.convert_ids_to_tokens(ids) == ["▁", "▁Hello", "<0x0A>"]
    assert llama("Hello")["input_ids"][0] == llama.bos_token_id


def test_real_tokenizer_is_saved_as_an_ordinary_tokenizer_directory():
    from fusebench.data.packages import cache_root

    load_real_tokenizer("mpt")
    saved = list((cache_root() / "tokenizers").glob("mpt-*"))
    assert any((p / "tokenizer.json").exists() and (p / ".complete").exists() for p in saved)


def test_unknown_real_tokenizer_lists_the_available_ones():
    with pytest.raises(FusebenchError, match="gpt-2, gpt-neox, llama-spm, mpt"):
        load_real_tokenizer("llama-3")
