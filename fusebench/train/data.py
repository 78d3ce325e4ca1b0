"""Training sequences: the corpus cut into text chunks that every model tokenizes for itself.

Fusion needs every model to see *the same text* in sequence i, so the unit of data is a text chunk, not a token
window: each training document is tokenized by the target's tokenizer and cut every `seq_len` tokens, and the
character span of each window becomes one chunk. The target, its teachers and the sources then tokenize the chunk
with their own tokenizers (`tokenize_chunks`), so their sequences cover identical text and can be aligned.
"""

from __future__ import annotations

import numpy as np


def chunk_documents(tokenizer, docs: list[str], seq_len: int, min_tokens: int = 8) -> list[str]:
    """Cut documents into text chunks of about `seq_len` target tokens (one less, leaving room for nothing else)."""
    chunks: list[str] = []
    for doc in docs:
        enc = tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        for start in range(0, len(offsets), seq_len):
            window = offsets[start:start + seq_len]
            if len(window) < min_tokens:
                continue
            lo = window[0][0] if start else 0  # keep leading whitespace of the document's first chunk
            chunks.append(doc[lo:window[-1][1]])
    return chunks


def tokenize_chunks(tokenizer, chunks: list[str], max_len: int) -> list[np.ndarray]:
    """Token ids of each chunk (no special tokens), truncated to `max_len`, in the smallest dtype that fits."""
    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    out = []
    for ids in tokenizer(chunks, add_special_tokens=False)["input_ids"]:
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
