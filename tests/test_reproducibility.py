"""Drift alarms for the first stage of every model: random initialisation is a fixed function of seed and config.

Issue 14 found runs of one recipe disagreeing across machines. A model's initial weights are where that would
start; they are pinned here by hash, so a library upgrade (torch's RNG or init code, transformers' `_init_weights`)
that changes them fails this test instead of silently shifting every number. The pins hold for torch's vectorised
CPU kernels (AVX2 and AVX512 give the same bits; scalar "DEFAULT" kernels do not, and neither, untested, may ARM):
elsewhere the test still checks that a fresh process reproduces this one. Updating a pin is a deliberate act that
makes earlier results incomparable (rerun and republish them).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

# sha256 (first 16 hex digits) of build_model(arch, 512, ModelSize(hidden=32, layers=2, heads=4, max_positions=64),
# bos=1, eos=2, seed=7): state-dict names and bytes in name order. Same under transformers 5.23.0 and 5.24.0.
PINNED = {"llama": "1305d70cb698d6e6", "gpt_neox": "7d3ded965c4dbd74", "mpt": "00c00cbfa312dfa4"}
_HASH_INITS = """
import hashlib, json
from fusebench.models.build import ModelSize, build_model
out = {}
for arch in ("llama", "gpt_neox", "mpt"):
    model = build_model(arch, 512, ModelSize(hidden=32, layers=2, heads=4, max_positions=64), 1, 2, seed=7)
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    out[arch] = h.hexdigest()[:16]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def init_hashes() -> dict[str, str]:
    """The same script as the fresh process runs, run in this one."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(_HASH_INITS, {})
    return json.loads(printed.getvalue())


def test_initial_weights_are_the_same_in_a_fresh_process(init_hashes):
    done = subprocess.run([sys.executable, "-c", _HASH_INITS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == init_hashes


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="pins were taken with torch's AVX2/AVX512 kernels")
def test_initial_weights_match_the_pinned_hashes(init_hashes):
    assert init_hashes == PINNED, (
        "model initialisation changed (torch / transformers upgrade?): results trained before are not comparable "
        f"with new ones. New hashes: {init_hashes}")


def test_the_environment_record_names_what_can_change_results():
    from fusebench.environment import environment

    env = environment()
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["packages"]["transformers"] and env["packages"]["torch"] and "sentencepiece" in env["packages"]
    json.dumps(env)  # JSON-ready for .stage.json and manifests
