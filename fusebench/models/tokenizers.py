"""Train the tiny world's tokenizers with the `tokenizers` library and save them as HF tokenizer directories.

Two families, so that source and target tokenizations really differ the way GPT-NeoX / MPT and Llama-2 do:
- `bpe`: byte-level BPE, word starts marked with `Ġ` (GPT-2 / GPT-NeoX / MPT style); never produces <unk>.
- `unigram`: SentencePiece-style Unigram, word starts marked with `▁` (Llama-2 style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fusebench.errors import FusebenchError

TOKENIZER_KINDS = ("bpe", "unigram")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a tokenizer of `kind` on `texts` and save it (tokenizer.json + config) to `out_dir`."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                          unk_token="<unk>", show_progress=False)
        special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        raise FusebenchError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")
    tok.train_from_iterator(_batched(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=special["eos_token"],
                                   model_max_length=1 << 20, **special)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def load_tokenizer(path_or_id: str | Path, **kwargs) -> PreTrainedTokenizerFast:
    """Load a tokenizer from a local directory or hub id, with a clear error when it cannot be found."""
    try:
        return AutoTokenizer.from_pretrained(str(path_or_id), **kwargs)
    except (OSError, ValueError) as err:
        raise FusebenchError(
            f"cannot load tokenizer {str(path_or_id)!r}: {err}. Give a local directory holding tokenizer.json, "
            "or a hub id (which needs network access, or a copy in the local Hugging Face cache)."
        ) from None


def _batched(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
