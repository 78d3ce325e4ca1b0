"""The align stage on one store with 2 worker processes vs 1: identical output, and the speedup.

Stores: the real Llama-2 (target) and MPT (source) tokenizers (fusebench.models.real_tokenizers) on Python stdlib
text, cut into documents of `target_tokens` Llama-2 tokens (384 of 2048; 48 of 512 with --quick); every position
gets a top-10 distribution of seeded random ids and log-probs (the alignment does the same work whatever the
probabilities are, and no model is needed).
Both runs align the same stores through `fusebench.align.corpus.align_stores` (DTW, MinED map) after one warm-up
run in the parent (numba compiles there once; forked workers inherit the compiled code); the figure is the
1-process wall time over the 2-process one. Each output file is compared byte for byte.

On a shared machine with autogroup scheduling (Linux's default per session), extra processes of one session share
that session's CPU slice instead of taking a second core: measure when the machine is quiet, or in a session of its
own with a raised autogroup priority (`setsid` + `/proc/self/autogroup`).

Run: `python bench/bench_parallel.py [--quick]` prints the dict as JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

FILES = ("LICENSE.txt", "argparse.py", "difflib.py", "textwrap.py", "shutil.py", "typing.py", "inspect.py",
         "tarfile.py", "pathlib.py", "subprocess.py", "logging/__init__.py", "email/message.py")


def documents(tok, target_tokens: int, count: int) -> list[str]:
    """Consecutive `target_tokens`-token pieces of the stdlib files, cut at token starts."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    names = list(FILES) + sorted(p.name for p in root.glob("*.py") if p.name not in FILES)
    for name in names:
        text = (root / name).read_text(encoding="utf-8", errors="replace")
        starts = [s for s, _ in tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
        for lo in range(0, len(starts) - target_tokens, target_tokens):
            docs.append(text[starts[lo]:starts[lo + target_tokens]])
            if len(docs) == count:
                return docs
    return docs


def write_store(path: Path, tok, texts: list[str], vocab: int, seed: int, k: int = 10) -> None:
    from fusebench.extract.store import SequenceDistributions, StoreWriter

    rng = np.random.default_rng(seed)
    seqs = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        ids = np.asarray(ids, dtype=np.int64)
        top = rng.integers(0, len(tok), size=(len(ids), k))
        lp = np.sort(np.log(rng.dirichlet(np.ones(k + 1), size=len(ids))[:, :k]), axis=1)[:, ::-1].astype(np.float32)
        gold = lp[:-1, 0].copy()
        seqs.append(SequenceDistributions(ids, top, lp, gold, float(-gold.mean())))
    writer = StoreWriter(path, f"bench-{seed}", f"bench-{seed}", vocab, k, num_shards=1)
    writer.write_shard(0, seqs)
    writer.finalize(1)


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def bench_align_parallel(quick: bool = False) -> dict:
    from fusebench.align import build_vocab_map
    from fusebench.align.corpus import align_stores
    from fusebench.models.real_tokenizers import load_real_tokenizer

    # enough documents that the stage's fixed costs (loading the vocab map, opening stores, starting the pool) are
    # small beside the per-document work, as they are on a real corpus (878k documents per source on MiniPile)
    target_tokens, count = (512, 48) if quick else (2048, 384)
    tgt_tok, src_tok = load_real_tokenizer("llama-spm"), load_real_tokenizer("mpt")
    texts = documents(tgt_tok, target_tokens, count)
    work = Path(tempfile.mkdtemp(prefix="fusebench-bench-align-"))
    try:
        write_store(work / "tgt", tgt_tok, texts, len(tgt_tok), 0)
        write_store(work / "src", src_tok, texts, len(src_tok), 1)
        build_vocab_map("mined", src_tok, tgt_tok).save(work / "vmap")
        args = dict(aligner="dtw", fallback="next", source_store=work / "src", target_store=work / "tgt",
                    vocab_map=work / "vmap", source_tokenizer=src_tok, target_tokenizer=tgt_tok)
        align_stores(**args, out_dir=work / "warm", workers=1)  # warm-up: numba, tokenizer caches
        seconds = {}
        for workers in (1, 2):
            start = time.perf_counter()
            align_stores(**args, out_dir=work / f"out{workers}", workers=workers)
            seconds[workers] = time.perf_counter() - start
        identical = _files(work / "out1") == _files(work / "out2")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"align_2proc_speedup": seconds[1] / seconds[2], "align_2proc_identical": bool(identical),
            "align_1proc_seconds": seconds[1], "align_2proc_seconds": seconds[2], "align_documents": len(texts),
            "align_target_tokens_per_doc": target_tokens}


if __name__ == "__main__":
    print(json.dumps(bench_align_parallel(quick="--quick" in sys.argv), indent=2))
