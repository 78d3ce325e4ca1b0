"""`fusebench bench` produces every documented figure. Speed ratios are reported, never asserted here (they belong
to the benchmark, not to a unit test); sizes and correctness are asserted."""

import json
import subprocess
import sys

from fusebench.bench import BENCH_DIR, TARGETS


def test_bench_quick_reports_every_figure_with_equal_dtw_cost_and_a_compact_store():
    # README's `fusebench bench --json`, at the quick size (tests/test_docs_commands.py leaves it to this test)
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "bench", "--json", "--quick"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    # the exit status says whether every target was met (a speed target may miss on a loaded machine): it must
    # agree with the figures, whatever they are
    assert proc.returncode == (0 if all(t["met"] for t in results["targets"].values()) else 1)
    for key in TARGETS:
        assert isinstance(results[key], float) and results[key] > 0, key
        assert results["targets"][key]["value"] == results[key]
    assert results["dtw_equal_cost"] is True
    assert results["align_2proc_identical"] is True  # the align stage writes the same store on 2 processes as on 1
    assert results["store_bytes_per_token_per_model"] <= 32.0  # a size, exact by construction of the format
    assert results["store_bytes_per_token_vocab_152k"] <= 32.0 < results["store_all_bytes_per_token_vocab_152k"]
    assert results["store_bytes_per_token_vocab_32k"] <= 30.0
    assert results["store_fusion_loss_rel_change"] <= 1e-3
    # alignment quality on real MPT -> Llama-2 prose and code, checked against the tokenizers' character offsets
    for kind in ("prose", "code"):
        for rule in ("dtw", "offsets"):
            assert results[f"align_{kind}_{rule}_precision"] == 1.0
            assert results[f"align_{kind}_{rule}_coverage"] > 0.6
        assert results[f"align_{kind}_dtw_blocks_precision"] < 1.0
        assert 0 < results[f"align_{kind}_reference_mined_coverage"] < 1.0


def test_json_mode_keeps_library_chatter_off_stdout():
    # DeepSpeed (installed for the rehearsal) logs "Setting accelerator to CPU" to stdout when accelerate imports
    # it, which made `fusebench bench --json` print invalid JSON: stdout must carry the JSON object alone.
    import subprocess
    import sys
    code = ("import json, logging, os, sys\n"
            "from fusebench.bench import quiet_stdout\n"
            "def work():\n"
            "    logging.getLogger('chatty').addHandler(logging.StreamHandler(sys.stdout))\n"
            "    logging.getLogger('chatty').warning('[WARNING] Setting accelerator to CPU')\n"
            "    print('a library print'); os.write(1, b'raw fd write\\n')\n"
            "    return {'figure': 1.5}\n"
            "print(json.dumps(quiet_stdout(work)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"figure": 1.5}
    assert "Setting accelerator to CPU" in out.stderr and "raw fd write" in out.stderr


def test_gpu_check_dry_run_writes_every_step_or_its_reason(tmp_path):
    import os

    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=300, cwd=BENCH_DIR.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((tmp_path / "gpu_check.json").read_text())
    assert got["device"] == "cpu (dry run)"
    # every step either measured its figures or says why it was skipped, never both, never neither
    steps = {"extraction", "fusion_step", "hf_vs_vllm", "fsdp_2stage"}
    assert set(got["figures"]) | set(got["skipped"]) == steps
    assert not set(got["figures"]) & set(got["skipped"])
    assert got["figures"]["extraction"]["extraction_vs_forward_ratio"] > 0
    assert got["figures"]["fusion_step"]["fusion_step_peak_memory_ratio"] > 0
    assert "2" in got["skipped"]["fsdp_2stage"]
