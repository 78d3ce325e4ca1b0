"""DTW token alignment: the fast `dtw` against the plain-Python `dtw_reference`, on real Llama-2 / MPT tokens.

Documents are the Python stdlib's license text and source files, each cut to its first 2048 MPT (target) tokens
and tokenized by the real Llama-2 SentencePiece tokenizer as the source (see fusebench.models.real_tokenizers).
The reference is what FuseLLM's alignment does — a Python double loop with a C edit distance per cell, about a
second or more per document — so it is timed on a subset of the documents (`reference_documents` says how many);
the speedup compares both on that same subset. The fast path is timed after one warm-up call (numba's first call
loads or compiles the kernels; `dtw_fast_first_call_seconds` reports it) as the median of 3 runs per document.

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


if __name__ == "__main__":
    print(json.dumps(bench_dtw(quick="--quick" in sys.argv), indent=2))
