"""One document's alignment, as a pure function: token sequences and a source's distributions in, aligned arrays and
quality figures out. The align stage maps it over the documents of a store (serially, or split over processes).

Steps: is the source cut short (its text a strict prefix of the target's, possibly ending mid-character)? If so the
source is left out of this document. Otherwise: the aligner's path (`dtw` or `offsets`), where each token ends
(`fusebench.align.ends`), and the transfer, which moves a distribution only between tokens ending at the same byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusebench.align.ends import quality, token_ends
from fusebench.align.registry import get_aligner
from fusebench.align.tokens import Tokenization
from fusebench.align.transfer import AlignedDistributions, end_matched_sources, transfer_distributions
from fusebench.extract.store import SequenceDistributions

REPLACEMENT = "\ufffd"  # what decoding leaves of a UTF-8 character cut in the middle


@dataclass
class AlignedDocument:
    aligned: AlignedDistributions | None  # None: the source was cut short on this document and is left out
    quality: dict | None                  # `ends.quality` of the transfer, plus blocks the end check turned down


def is_cut_short(source_text: str, target_text: str) -> bool:
    """The source covers only a strict prefix of the target's text (its token limit cut it), possibly ending in the
    middle of a multi-byte character, which decodes to U+FFFD."""
    if source_text == target_text:
        return False
    whole = source_text.rstrip(REPLACEMENT)
    return len(whole) < len(target_text) and target_text.startswith(whole)


def align_document(source: SequenceDistributions, source_tokens: Tokenization, target_tokens: Tokenization,
                   src_to_tgt: np.ndarray, *, aligner: str, fallback: str, source_text: str,
                   target_text: str, counts=None) -> AlignedDocument:
    """Align one document; `source_text` / `target_text` are the decoded texts in the form both sides compare.
    `counts` (the `statistics` aligner only): the corpus alignment counts its n:1 blocks are weighted by."""
    if is_cut_short(source_text, target_text):
        return AlignedDocument(None, None)
    path = get_aligner(aligner)(source_tokens, target_tokens)
    src_end, tgt_end = token_ends(source_tokens, target_tokens)
    out = transfer_distributions(source, np.asarray(target_tokens.ids), path.pairs, src_to_tgt,
                                 source_text=source_text, target_text=target_text, fallback=fallback,
                                 source_ends=src_end, target_ends=tgt_end)
    if aligner == "statistics":
        from fusebench.align.weighted import weight_blocks

        out = weight_blocks(out, source, path.pairs, src_to_tgt, counts)
    figures = quality(out.source_index.astype(np.int64), src_end, tgt_end)
    blocks = end_matched_sources(path.pairs.astype(np.int64), len(source_tokens), len(target_tokens))
    closed = blocks >= 0
    figures["blocks_ends_differ"] = int((src_end[blocks[closed]] != tgt_end[closed]).sum())
    return AlignedDocument(out, figures)
