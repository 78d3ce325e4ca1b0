"""Train the tiny world's tokenizers with the `tokenizers` library and save them as HF tokenizer directories.

Two families, so that source and target tokenizations really differ the way GPT-NeoX / MPT and Llama-2 do:
- `bpe`: byte-level BPE, word starts marked with `Ġ` (GPT-2 / GPT-NeoX / MPT style); never produces <unk>.
- `unigram`: SentencePiece Unigram with byte fallback, word starts marked with `▁` (Llama-2 style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fusebench.errors import FusebenchError

TOKENIZER_KINDS = ("bpe", "unigram")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a tokenizer of `kind` on `texts` and save it (tokenizer.json + config) to `out_dir`."""
    if kind == "unigram":
        return _train_sentencepiece(texts, vocab_size, Path(out_dir))
    if kind != "bpe":
        raise FusebenchError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    tok.train_from_iterator(_batched(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=special["eos_token"],
                                   model_max_length=1 << 20, **special)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def _train_sentencepiece(texts: Iterable[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """A Llama-2-style tokenizer: SentencePiece Unigram with `▁`, byte fallback and split digits.

    Trained with the `sentencepiece` library itself rather than `tokenizers`' Unigram trainer: the latter iterates
    Rust hash maps, so the same corpus gives a different vocabulary order in every process, which would break
    reproducibility (and every cache key downstream). SentencePiece with one thread is deterministic.
    """
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        byte_fallback=True, split_digits=True, num_threads=1, character_coverage=0.9995,
        max_sentence_length=1 << 20, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tok = LlamaTokenizer.from_pretrained(str(out_dir), model_max_length=1 << 20)  # converts to a fast tokenizer
    tok.pad_token = tok.eos_token
    tok.save_pretrained(out_dir)
    return tok


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
