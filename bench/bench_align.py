"""DTW token alignment: the fast `dtw` against the plain-Python `dtw_reference`, on real Llama-2 / MPT tokens.

Documents are the Python stdlib's license text and source files, each cut to its first 2048 MPT (target) tokens
and tokenized by the real Llama-2 SentencePiece tokenizer as the source (see fusebench.models.real_tokenizers).
The reference is what FuseLLM's alignment does — a Python double loop with a C edit distance per cell, about a
second or more per document — so it is timed on a subset of the documents (`reference_documents` says how many);
the speedup compares both on that same subset. The fast path is timed after one warm-up call (numba's first call
loads or compiles the kernels; `dtw_fast_first_call_seconds` reports it) as the median of 3 runs per document.

`bench_alignment_quality` measures, on real text tokenized by MPT (source) and Llama-2 (target, as in the paper),
which target positions receive a source distribution (coverage) and how many of those receive it from a source
token that ends at the same character (precision; checked with the tokenizers' own character offsets, which the
alignment does not use). Prose: the Python license and documentation topics (`pydoc_data`); code: stdlib modules.
Rules compared on the same documents: `dtw_blocks` (the DTW path's blocks alone, fusebench before the end check),
`dtw` and `offsets` (the two aligners as the align stage now transfers), and the reference implementation's guard
(`reference_em`, `reference_mined`: a target token paired with exactly one source token on the DTW path, whose
EM / MinED vocabulary map sends the source token to the target token).

Run: `python bench/bench_align.py [--quick]` prints the dict as JSON.
"""

from __future__ import annotations

import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

DOCUMENTS = ("LICENSE.txt", "json/decoder.py", "textwrap.py", "difflib.py", "argparse.py", "shutil.py")
PROSE_TOPICS = ("exceptions", "naming", "execmodel", "import", "debugger")  # pydoc_data's documentation topics
CODE_FILES = ("textwrap.py", "difflib.py", "json/decoder.py", "shutil.py", "argparse.py")
RULES = ("dtw_blocks", "dtw", "offsets", "reference_em", "reference_mined")


def aligned_documents(target_tokens: int, count: int):
    """(source, target) tokenizations of `count` stdlib texts cut to `target_tokens` MPT tokens."""
    from fusebench.align import tokenize_for_alignment
    from fusebench.models.real_tokenizers import load_real_tokenizer

    source_tok, target_tok = load_real_tokenizer("llama-spm"), load_real_tokenizer("mpt")
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for name in DOCUMENTS[:count]:
        text = (root / name).read_text(encoding="utf-8")
        full = tokenize_for_alignment(target_tok, text)
        text = text[: full.offsets[min(target_tokens, len(full)) - 1][1]]
        docs.append((tokenize_for_alignment(source_tok, text), tokenize_for_alignment(target_tok, text)))
    return docs


def bench_dtw(quick: bool = False) -> dict:
    from fusebench.align.dtw import dtw, dtw_reference

    target_tokens, count, reference_count = (512, 1, 1) if quick else (2048, 4, 2)
    docs = aligned_documents(target_tokens, count)

    start = time.perf_counter()
    dtw(*docs[0])
    first_call = time.perf_counter() - start

    fast_times, costs_equal, reference_times = [], True, []
    for k, (source, target) in enumerate(docs):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            fast = dtw(source, target)
            runs.append(time.perf_counter() - start)
        fast_times.append(statistics.median(runs))
        if k < reference_count:
            start = time.perf_counter()
            reference = dtw_reference(source, target)
            reference_times.append(time.perf_counter() - start)
            costs_equal &= reference.cost == fast.cost
    return {
        "dtw_speedup": sum(reference_times) / sum(fast_times[:reference_count]),
        "dtw_equal_cost": bool(costs_equal),
        "dtw_fast_seconds_per_doc": statistics.mean(fast_times),
        "dtw_reference_seconds_per_doc": statistics.mean(reference_times),
        "dtw_fast_first_call_seconds": first_call,
        "documents": count,
        "reference_documents": reference_count,
        "target_tokens_per_doc": statistics.mean(len(t) for _, t in docs),
        "source_tokens_per_doc": statistics.mean(len(s) for s, _ in docs),
    }


def quality_texts(chars: int, count: int) -> dict[str, list[str]]:
    """Prose and code documents from the Python installation, each cut to its first `chars` characters."""
    from pydoc_data.topics import topics

    root = Path(sysconfig.get_paths()["stdlib"])
    prose = [(root / "LICENSE.txt").read_text(encoding="utf-8")] + [topics[t] for t in PROSE_TOPICS if t in topics]
    code = [(root / name).read_text(encoding="utf-8") for name in CODE_FILES]
    return {"prose": [t[:chars] for t in prose[:count]], "code": [t[:chars] for t in code[:count]]}


def _rule_transfers(source, target, maps: dict) -> dict[str, "np.ndarray"]:
    """For each rule, the source position each target position receives (-1: none)."""
    import numpy as np

    from fusebench.align import align_by_offsets
    from fusebench.align.dtw import dtw
    from fusebench.align.ends import token_ends, transfer_sources
    from fusebench.align.transfer import end_matched_sources

    src_end, tgt_end = token_ends(source, target)
    pairs = dtw(source, target).pairs.astype(np.int64)
    out = {"dtw_blocks": end_matched_sources(pairs, len(source), len(target)),
           "dtw": transfer_sources(pairs, src_end, tgt_end),
           "offsets": transfer_sources(align_by_offsets(source, target).pairs, src_end, tgt_end)}
    # the reference: target i takes source j when i pairs with j alone and the vocab map sends j's token to i's
    per_target = np.bincount(pairs[:, 1], minlength=len(target))
    j_of = np.full(len(target), -1, np.int64)
    j_of[pairs[:, 1]] = pairs[:, 0]
    src_ids, tgt_ids = np.asarray(source.ids), np.asarray(target.ids)
    for kind, src_to_tgt in maps.items():
        ok = (per_target == 1) & (src_to_tgt[src_ids[j_of]] == tgt_ids)
        out[f"reference_{kind}"] = np.where(ok, j_of, -1)
    return out


def bench_alignment_quality(quick: bool = False) -> dict:
    """Coverage and precision of each transfer rule on prose and on code (see the module docstring)."""
    import numpy as np

    from fusebench.align import build_vocab_map, tokenize_for_alignment
    from fusebench.models.real_tokenizers import load_real_tokenizer

    mpt, llama = load_real_tokenizer("mpt"), load_real_tokenizer("llama-spm")
    maps = {kind: build_vocab_map(kind, mpt, llama).src_to_tgt for kind in ("em", "mined")}
    chars, count = (2000, 2) if quick else (8000, 5)
    out: dict = {}
    for kind, texts in quality_texts(chars, count).items():
        received = {rule: 0 for rule in RULES}
        exact = {rule: 0 for rule in RULES}
        positions = 0
        for text in texts:
            source, target = tokenize_for_alignment(mpt, text), tokenize_for_alignment(llama, text)
            src_char_end = np.array([e for _, e in source.offsets])
            tgt_char_end = np.array([e for _, e in target.offsets])
            positions += len(target)
            for rule, src_of in _rule_transfers(source, target, maps).items():
                got = src_of >= 0
                received[rule] += int(got.sum())
                exact[rule] += int((src_char_end[src_of[got]] == tgt_char_end[got]).sum())
        for rule in RULES:
            out[f"align_{kind}_{rule}_coverage"] = received[rule] / positions
            out[f"align_{kind}_{rule}_precision"] = exact[rule] / max(received[rule], 1)
        out[f"align_{kind}_target_tokens"] = positions
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(json.dumps({**bench_dtw(quick=quick), **bench_alignment_quality(quick=quick)}, indent=2))
