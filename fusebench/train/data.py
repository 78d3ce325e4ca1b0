"""Training sequences: the corpus packed into text chunks that every model tokenizes for itself.

Fusion needs every model to see *the same text* in sequence i, so the unit of data is a text chunk, not a token
window. The usual continual-pretraining layout is kept: every training document is followed by an end-of-sequence
token, the documents are concatenated and the stream is cut every `seq_len` target tokens, so one epoch reads every
token of the corpus once (`pack_documents`). A chunk is a list of text pieces (one per document it touches);
models join the pieces with their *own* EOS id (`tokenize_chunks`): `["tail of A", "B", ""]` is
`tail of A <eos> B <eos>`. A document is cut between tokens, at the start of the next token, so the pieces of a
document concatenate back to exactly that document.
"""

from __future__ import annotations

from typing import Union

import numpy as np

Chunk = Union[str, list]  # a list of text pieces joined by EOS; a plain string (older chunk stages) is one piece


def pack_documents(tokenizer, docs: list[str], seq_len: int, batch: int = 256) -> list[list[str]]:
    """Documents, each followed by EOS, concatenated and cut into chunks of `seq_len` target tokens (the last chunk
    may be shorter; a chunk starting inside a document holds one token less, see below). No text is dropped: the
    pieces of each document concatenate back to it."""
    chunks: list[list[str]] = []
    pieces, used = [""], 0
    for lo in range(0, len(docs), batch):
        part = docs[lo:lo + batch]
        encs = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for doc, offsets in zip(part, encs):
            # cut points between tokens: token k's piece starts where token k starts; the ends are the doc's ends
            cuts = [0] + [start for start, _ in offsets[1:]] + [len(doc)]
            pos, n = 0, len(offsets)
            while pos < n:
                if used == seq_len:
                    chunks.append(pieces)
                    # a chunk that starts inside a document: tokenized on its own, that piece may gain a word-start
                    # marker (SentencePiece's dummy prefix), so one position is kept free for it
                    pieces, used = [""], (1 if pos else 0)
                take = min(seq_len - used, n - pos)
                pieces[-1] += doc[cuts[pos]:cuts[pos + take]]
                pos, used = pos + take, used + take
            if n == 0 and doc:  # text the tokenizer turns into no token (whitespace only): keep it anyway
                pieces[-1] += doc
            if used == seq_len:
                chunks.append(pieces)
                pieces, used = [""], 0
            pieces.append("")  # the document's EOS
            used += 1
    if used:
        chunks.append(pieces)
    return chunks


def chunk_pieces(chunk: Chunk) -> list[str]:
    return [chunk] if isinstance(chunk, str) else list(chunk)


def chunk_text(chunk: Chunk) -> str:
    """The chunk's text without separators (what its UTF-8 byte count is taken of)."""
    return "".join(chunk_pieces(chunk))


def tokenize_chunks(tokenizer, chunks: list[Chunk], max_len: int, eos_id: int | None = None) -> list[np.ndarray]:
    """Token ids of each chunk: its pieces tokenized without special tokens and joined by this tokenizer's EOS,
    truncated to `max_len`, in the smallest dtype that fits."""
    from fusebench.errors import FusebenchError

    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    eos = tokenizer.eos_token_id if eos_id is None else eos_id
    lists = [chunk_pieces(c) for c in chunks]
    if eos is None and any(len(p) > 1 for p in lists):
        raise FusebenchError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS token, which packed "
                             "chunks put between documents; give the model a tokenizer with eos_token.")
    flat = [p for ps in lists for p in ps]
    encoded = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, k = [], 0
    for ps in lists:
        ids: list[int] = []
        for j in range(len(ps)):
            if j:
                ids.append(eos)
            ids.extend(encoded[k])
            k += 1
        out.append(np.asarray(ids[:max_len], dtype=dtype))
    return out


def batch_indices(num_sequences: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Sequence indices of global batch `step`: epochs are seeded permutations, so any step is reproducible alone
    (which is what makes resuming after a crash give exactly the same run)."""
    per_epoch = max(1, num_sequences // batch_size)
    epoch, within = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_sequences)
    return perm[within * batch_size:(within + 1) * batch_size]


def pad_batch(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence; returns ids [B, T] (int64) and a 0/1 mask."""
    length = max(len(s) for s in seqs)
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return ids, mask
