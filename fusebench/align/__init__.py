"""Token alignment across tokenizers: which target token each source token corresponds to.

- `tokens`: `Tokenization`, `Alignment`, and how token spellings (`Ġ`, `▁`, `<0x0A>`) are normalised to text.
- `dtw`: the paper's DTW alignment (exact, numba) and its plain-Python reference. The functions are not re-exported
  here, so that `fusebench.align.dtw` stays the module: use `ALIGNERS["dtw"]` or `from fusebench.align.dtw import dtw`.
- `offsets`: linear-time alignment from where tokens end in the text.
- `ends`: where each token ends (running byte lengths of the decoded tokens, from ids alone), the transfer rule
  (only between tokens ending together) and its coverage / precision.
- `document`: one document's alignment as a pure function; the align stage (`corpus`) maps it over a store.
- `vocab_map`: EM and MinED vocabulary maps (source id -> target id).
- `registry`: `ALIGNERS` and `VOCAB_MAPS`, name -> implementation.
- `transfer`: moving source distributions onto the target vocabulary along an alignment.
"""

from fusebench.align.offsets import align_by_offsets
from fusebench.align.registry import ALIGNERS, VOCAB_MAPS, build_vocab_map, get_aligner
from fusebench.align.tokens import (Alignment, Tokenization, normalize_tokens, token_convention,
                                    tokenization_from_ids, tokenize_for_alignment)
from fusebench.align.vocab_map import VocabMap, nearest_tokens, vocab_fingerprint

__all__ = [
    "ALIGNERS", "VOCAB_MAPS", "Alignment", "Tokenization", "VocabMap", "align_by_offsets", "build_vocab_map",
    "get_aligner", "nearest_tokens", "normalize_tokens", "token_convention",
    "tokenization_from_ids", "tokenize_for_alignment", "vocab_fingerprint",
]
