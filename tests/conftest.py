"""Shared fixtures: real tiny tokenizers and models, built once per test session.

Everything here is real (trained `tokenizers`, transformers models saved as safetensors); nothing is mocked.
Text comes from the Python standard library's own source, which is on every machine.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    """~200 KB of real Python source, split into documents."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))
    return [f.read_text(encoding="utf-8") for f in files]


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory, stdlib_texts) -> Path:
    from fusebench.models.tokenizers import train_tokenizer

    out = tmp_path_factory.mktemp("tok_bpe")
    train_tokenizer("bpe", stdlib_texts, 1024, out)
    return out


@pytest.fixture(scope="session")
def unigram_tokenizer_dir(tmp_path_factory, stdlib_texts) -> Path:
    from fusebench.models.tokenizers import train_tokenizer

    out = tmp_path_factory.mktemp("tok_unigram")
    train_tokenizer("unigram", stdlib_texts, 800, out)
    return out


def _save_tiny(arch: str, tok_dir: Path, out: Path, seed: int, hidden: int = 64) -> Path:
    from transformers import AutoTokenizer

    from fusebench.models.build import ModelSize, build_model

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    model = build_model(arch, len(tok), ModelSize(hidden=hidden, layers=2, heads=4), tok.bos_token_id,
                        tok.eos_token_id, seed)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, unigram_tokenizer_dir) -> Path:
    """A randomly initialised tiny Llama with the `▁` unigram tokenizer (the target's family)."""
    return _save_tiny("llama", unigram_tokenizer_dir, tmp_path_factory.mktemp("llama"), seed=0)


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory, bpe_tokenizer_dir) -> Path:
    """A randomly initialised tiny GPT-NeoX with the `Ġ` byte-level BPE tokenizer."""
    return _save_tiny("gpt_neox", bpe_tokenizer_dir, tmp_path_factory.mktemp("neox"), seed=1)


@pytest.fixture(scope="session")
def tiny_neox_pair(tmp_path_factory, bpe_tokenizer_dir) -> tuple[Path, Path]:
    """Two GPT-NeoX models of the same shape and tokenizer, different seeds (for ensembles and merges)."""
    return (_save_tiny("gpt_neox", bpe_tokenizer_dir, tmp_path_factory.mktemp("neox_a"), seed=2),
            _save_tiny("gpt_neox", bpe_tokenizer_dir, tmp_path_factory.mktemp("neox_b"), seed=3))
