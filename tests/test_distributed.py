"""N processes compute what one process computes: extraction and training under torch.distributed (gloo, CPU).

tests/distributed/worker.py runs once as a plain process and once under `torch.distributed.run --nproc_per_node 2`;
both extract a distribution store and train a tiny Llama (CLM + a fusion term, with a checkpoint on the way), and
the two outputs are compared. This is the property multi-GPU runs rely on: the global batch is fixed by
(seed, step), each process takes a slice, and losses are normalised by the global token count.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

WORKER = Path(__file__).parent / "distributed" / "worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, inputs: tuple[Path, Path], processes: int, steps: int = 4) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    args = [str(WORKER), str(inputs[0]), str(inputs[1]), str(out), str(steps)]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), *args]
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"worker failed ({processes} processes):\n{proc.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, unigram_tokenizer_dir, stdlib_texts) -> tuple[Path, Path]:
    """A saved tiny Llama and 12 token sequences of different lengths (so padding and masks matter)."""
    from transformers import AutoTokenizer

    from fusebench.models.build import ModelSize, build_model

    root = tmp_path_factory.mktemp("dist_inputs")
    tok = AutoTokenizer.from_pretrained(str(unigram_tokenizer_dir))
    model = build_model("llama", len(tok), ModelSize(hidden=32, layers=2, heads=4), tok.bos_token_id,
                        tok.eos_token_id, seed=0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    ids = tok("\n".join(stdlib_texts[:3]), add_special_tokens=False)["input_ids"]
    sequences = [ids[i * 80:i * 80 + 40 + (i % 4) * 10] for i in range(12)]
    (root / "sequences.json").write_text(json.dumps(sequences))
    return root / "model", root / "sequences.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, inputs) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("dist_runs")
    return {n: _launch(root / f"p{n}", inputs, n) for n in (1, 2)}


def test_two_process_extraction_splits_the_shards_and_writes_the_same_store(runs):
    from fusebench.extract.store import DistributionStore

    worlds = [json.loads(p.read_text())["world"] for p in sorted(runs[2].glob("rank*.json"))]
    assert worlds == [2, 2], "both processes must have run inside one 2-process group"
    one, two = (DistributionStore.open(runs[n] / "store") for n in (1, 2))
    assert (len(one), one.num_tokens) == (len(two), two.num_tokens) == (12, one.num_tokens)
    for i in range(len(one)):
        a, b = one.sequence(i), two.sequence(i)
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
        np.testing.assert_allclose(a.topk_logprobs, b.topk_logprobs, atol=1e-3)
        assert abs(a.sequence_ce - b.sequence_ce) < 1e-5


def test_two_process_training_gives_the_losses_lr_and_weights_of_one_process(runs):
    one, two = (json.loads((runs[n] / "history.json").read_text()) for n in (1, 2))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 1, 2, 3]
    for a, b in zip(one, two):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12), "the schedule must advance once per optimizer step"
        for key in ("loss", "clm", "fusion", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    assert one[-1]["loss"] < one[0]["loss"]  # it trained
    w1, w2 = (torch.load(runs[n] / "weights.pt") for n in (1, 2))
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5
    assert (runs[2] / "resume" / "step-2" / "model.safetensors").exists()  # checkpointed under DDP


@pytest.mark.slow
def test_two_process_run_resumes_from_its_checkpoint_to_the_same_weights(runs, inputs, tmp_path):
    """Kill-and-resume under DDP: a run that starts from the step-2 checkpoint ends where the unbroken one did."""
    resumed = tmp_path / "resumed"
    shutil.copytree(runs[2] / "resume", resumed / "resume")
    history = json.loads((_launch(resumed, inputs, 2) / "history.json").read_text())
    unbroken = json.loads((runs[2] / "history.json").read_text())
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in unbroken], rel=1e-6)
    w_resumed, w_unbroken = (torch.load(d / "weights.pt") for d in (resumed, runs[2]))
    assert max((w_resumed[k] - w_unbroken[k]).abs().max().item() for k in w_unbroken) < 1e-6


def test_fusebench_run_under_torchrun_gives_the_single_process_fused_model(tmp_path):
    """The stage runner under 2 processes: the main process owns the cache, both train; same weights as 1 process."""
    from safetensors.numpy import load_file

    smoke = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    weights, choices = {}, {}
    for n in (1, 2):
        work = tmp_path / f"p{n}"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
                    "--master_port", str(_free_port()), "-m", "fusebench.cli"] if n > 1 else \
                   [sys.executable, "-m", "fusebench.cli"]
        proc = subprocess.run([*launcher, "run", str(smoke), "--only", "model:fusellm", "--workdir", str(work),
                               "--results", str(work / "r"), "--reports", str(work / "rep")],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        [path] = [p for p in work.glob("cache/model/fusellm-*/model.safetensors")]
        weights[n] = (path.parent.name, load_file(path))
        choices[n] = json.loads((path.parent / "fusion_choices.json").read_text())
    assert weights[1][0] == weights[2][0]  # same stage key: the process count is not part of the experiment
    # each process counts MinCE's choices on its slice of the batches; the file holds the sum over processes
    assert choices[2] == choices[1] and sum(choices[1].values()) > 0
    one, two = weights[1][1], weights[2][1]
    assert max(float(np.abs(one[k] - two[k]).max()) for k in one) < 1e-4
