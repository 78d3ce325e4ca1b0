"""Token sequences as aligners see them, and how token strings are normalised so different vocabularies compare.

Tokenizers spell the same text differently: byte-level BPE (GPT-2, GPT-NeoX, MPT) writes every byte as a
printable stand-in (`Ġ` is a space, `Ċ` a newline, `Ã©` the two bytes of "é"); SentencePiece (Llama-2) writes a
space as `▁` and bytes it has no piece for as `<0x0A>`. Before comparing tokens we turn each into the text it
stands for:

- byte-level tokens are mapped back through GPT-2's byte-to-unicode table to their bytes;
- `▁` becomes a space and a byte-fallback token `<0xNN>` becomes that byte;
- the bytes are decoded as UTF-8; a token holding only part of a multi-byte character (common for emoji) keeps each
  stray byte as one lone-surrogate character (Python's "surrogateescape"), so a partial byte from either family
  compares equal to the same byte from the other.

Both word-boundary markers therefore become one ASCII space: `Ġthe` and `▁the` are both " the", distinct from the
word-internal "the". Special tokens (`<s>`, `<|endoftext|>`) are compared by their literal spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from fusebench.errors import FusebenchError

CONVENTIONS = ("byte_level", "metaspace", "plain")
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@dataclass
class Tokenization:
    """One text as a tokenizer splits it.

    `tokens` are spelled as the tokenizer spells them (`Ġthe`, `▁the`); `offsets` are character spans into the
    text (None when the tokenizer cannot give them); `ids` the token ids when known; `convention` how to read the
    spellings ("byte_level", "metaspace", "plain", or "auto" to guess from the tokens themselves).
    """

    tokens: list[str]
    offsets: list[tuple[int, int]] | None = None
    ids: list[int] | None = None
    convention: str = "auto"

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def texts(self) -> list[str]:
        """The tokens as the text they stand for (see the module docstring)."""
        convention = self.convention if self.convention != "auto" else guess_convention(self.tokens)
        return normalize_tokens(self.tokens, convention)


@dataclass
class Alignment:
    """A monotone path through (source, target) token positions and its summed edit distance.

    `pairs` is int32 [L, 2] of (source_index, target_index) in path order, from (0, 0) to (n-1, m-1); consecutive
    pairs advance the source, the target, or both by one.
    """

    pairs: np.ndarray
    cost: float


def normalize_tokens(tokens: list[str], convention: str) -> list[str]:
    if convention == "byte_level":
        return [_decode(_byte_level_bytes(t)) for t in tokens]
    if convention == "metaspace":
        return [_metaspace_text(t) for t in tokens]
    if convention == "plain":
        return list(tokens)
    raise FusebenchError(f"unknown token convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")


def guess_convention(tokens: list[str]) -> str:
    """A best guess from the tokens alone: `▁` means SentencePiece, byte-level stand-ins for space or control
    bytes (U+0100..U+0143, e.g. `Ġ`, `Ċ`) mean byte-level BPE. `tokenize_for_alignment` never needs to guess."""
    joined = "".join(tokens)
    if "▁" in joined:
        return "metaspace"
    if any("\u0100" <= ch <= "\u0143" for ch in joined):
        return "byte_level"
    return "plain"


def token_convention(tokenizer) -> str:
    """How `tokenizer` spells its tokens, read from its pipeline (fast tokenizers) or its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = " ".join(str(x) for x in (backend.normalizer, backend.pre_tokenizer, backend.decoder))
        if "ByteLevel" in pipeline:
            return "byte_level"
        if "Metaspace" in pipeline or "▁" in pipeline:
            return "metaspace"
    vocab = tokenizer.get_vocab()
    with_g = sum(t.startswith("Ġ") for t in vocab)
    with_u = sum(t.startswith("▁") for t in vocab)
    if max(with_g, with_u) < 0.05 * len(vocab):
        return "plain"
    return "byte_level" if with_g > with_u else "metaspace"


def tokenize_for_alignment(tokenizer, text: str) -> Tokenization:
    """Tokenize `text` without special tokens, keeping character offsets when the tokenizer is a fast one."""
    if not text:
        raise FusebenchError("cannot align an empty text: give at least one character to tokenize.")
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
    else:
        enc = tokenizer(text, add_special_tokens=False, verbose=False)
        offsets = None
    ids = list(enc["input_ids"])
    return Tokenization(tokenizer.convert_ids_to_tokens(ids), offsets, ids, token_convention(tokenizer))


def tokenization_from_ids(tokenizer, ids) -> Tokenization:
    """A tokenization from stored token ids (no offsets: they need the original text)."""
    ids = [int(i) for i in ids]
    return Tokenization(tokenizer.convert_ids_to_tokens(ids), None, ids, token_convention(tokenizer))


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes
    (controls, space, 0x7F-0xA0, 0xAD) are shifted to U+0100 onwards in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def _byte_level_bytes(token: str) -> bytes:
    table = _unicode_to_byte()
    out = bytearray()
    for ch in token:
        b = table.get(ch)
        # characters outside the table appear in added tokens spelled as raw text (GPT-NeoX's runs of spaces)
        out.extend(ch.encode("utf-8") if b is None else (b,))
    return bytes(out)


def _metaspace_text(token: str) -> str:
    m = _BYTE_FALLBACK.match(token)
    if m:
        return _decode(bytes([int(m.group(1), 16)]))
    return token.replace("▁", " ")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")
