"""Name -> implementation registries for aligners and vocab maps: adding a method is adding an entry."""

from __future__ import annotations

from typing import Callable

from fusebench.align.dtw import dtw
from fusebench.align.offsets import align_by_offsets
from fusebench.align.statistics import build_statistics_map
from fusebench.align.tokens import Alignment, Tokenization
from fusebench.align.vocab_map import VocabMap, build_em_map, build_mined_map
from fusebench.errors import FusebenchError

Aligner = Callable[[Tokenization, Tokenization], Alignment]
VocabMapBuilder = Callable[..., VocabMap]

# `statistics`: DTW's path; the align stage then mixes n:1 blocks by the corpus counts (`fusebench.align.weighted`)
ALIGNERS: dict[str, Aligner] = {"dtw": dtw, "offsets": align_by_offsets, "statistics": dtw}
VOCAB_MAPS: dict[str, VocabMapBuilder] = {"em": build_em_map, "mined": build_mined_map,
                                          "statistics": build_statistics_map}  # statistics: needs texts=


def get_aligner(name: str) -> Aligner:
    return _lookup(ALIGNERS, name, "aligner")


def build_vocab_map(kind: str, source_tokenizer, target_tokenizer, cache: bool = True, **corpus) -> VocabMap:
    """The `kind` vocab map (`em`, `mined`, `statistics`) from `source_tokenizer`'s ids to `target_tokenizer`'s;
    `statistics` also takes `texts=` (or `counts=`): the corpus its alignment counts come from."""
    return _lookup(VOCAB_MAPS, kind, "vocab map")(source_tokenizer, target_tokenizer, cache=cache, **corpus)


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise FusebenchError(f"unknown {what} {name!r}; valid names are: {', '.join(sorted(registry))}.")
    return registry[name]
