"""The align stage split over processes writes the same store, and every rank of a launch takes part in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusebench.extract.store import SequenceDistributions, StoreWriter


def _store(path: Path, tok, texts: list[str], seed: int, k: int = 4) -> None:
    """Real token ids of real text; seeded random top-k (alignment does the same work whatever the values)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        ids = np.asarray(ids, dtype=np.int64)
        lp = np.sort(np.log(rng.dirichlet(np.ones(k + 1), size=len(ids))[:, :k]), axis=1)[:, ::-1]
        gold = lp[:-1, 0].astype(np.float32)
        seqs.append(SequenceDistributions(ids, rng.integers(0, len(tok), (len(ids), k)), lp.astype(np.float32),
                                          gold, float(-gold.mean())))
    writer = StoreWriter(path, "m", "t", len(tok), k, num_shards=1)
    writer.write_shard(0, seqs)
    writer.finalize(1)


def test_alignment_over_two_worker_processes_writes_the_same_store(tmp_path, monkeypatch, stdlib_texts,
                                                                   bpe_tokenizer_dir, unigram_tokenizer_dir):
    from transformers import AutoTokenizer

    from fusebench.align import build_vocab_map
    from fusebench.align import corpus

    src_tok, tgt_tok = (AutoTokenizer.from_pretrained(str(d)) for d in (bpe_tokenizer_dir, unigram_tokenizer_dir))
    texts = [t[i:i + 300] for t in stdlib_texts[:6] for i in range(0, 1500, 300)][:22]
    _store(tmp_path / "src", src_tok, texts, 1)
    _store(tmp_path / "tgt", tgt_tok, texts, 0)
    build_vocab_map("mined", src_tok, tgt_tok, cache=False).save(tmp_path / "vmap")
    monkeypatch.setattr(corpus, "SHARD", 4)  # 6 shards, the last one short
    args = dict(aligner="dtw", fallback="next", source_store=tmp_path / "src", target_store=tmp_path / "tgt",
                vocab_map=tmp_path / "vmap", source_tokenizer=src_tok, target_tokenizer=tgt_tok)
    corpus.align_stores(**args, out_dir=tmp_path / "one", workers=1)
    corpus.align_stores(**args, out_dir=tmp_path / "two", workers=2)

    def files(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len([f for f in one if f.endswith("ids.npy")]) == 6
    assert one == two
    store = corpus.AlignedStore(tmp_path / "two")
    assert len(store) == 22 and all(np.isfinite(store.sequence(i).ce) for i in range(22))


def test_alignment_runs_on_every_rank_of_a_launch():
    """Under `accelerate launch` the runner runs distributed stages on every process; alignment is one of them
    (the ranks split its shards), so no rank waits in a barrier while one process aligns a whole corpus."""
    from fusebench.pipeline.graph import build_stages
    from fusebench.pipeline.recipe import load_recipe

    stages = build_stages(load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"))
    aligns = [s for s in stages if s.kind == "align"]
    assert aligns and all(s.distributed and s.resumable for s in aligns)


@pytest.mark.slow  # two torch processes and two evaluations: ~20 s on an idle 2-core machine
def test_evaluations_are_shared_out_over_the_ranks_of_a_launch(tmp_path, tiny_llama_dir, tiny_neox_dir):
    """Under torchrun with 2 processes, each rank runs one of the two evaluations (not rank 0 both while rank 1
    waits), and the run publishes both."""
    import json
    import os
    import socket
    import subprocess
    import sys

    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "spread", "corpora": {"c": {"kind": "tiny_world", "domain": "code", "train_chars": 3000,
                                            "test_chars": 1500}},
        "models": {"llama": {"path": str(tiny_llama_dir)}, "neox": {"path": str(tiny_neox_dir)}},
        "evaluate": {"suites": ["perplexity"], "perplexity_corpora": ["c"], "max_length": 64}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "fusebench.cli", "run", str(recipe), "--workdir", str(tmp_path / "w"),
                           "--results", str(tmp_path / "res"), "--reports", str(tmp_path / "rep")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 0: 1/1] eval:llama.perplexity" in proc.stderr and "[rank 1: 1/1] eval:neox.perplexity" in proc.stderr
    [run] = (tmp_path / "res").glob("spread-*")
    assert {p.parent.name for p in run.glob("*/perplexity.json")} == {"llama", "neox"}
    assert json.loads((run / "run.json").read_text())["recipe"] == "spread"
