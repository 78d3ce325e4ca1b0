"""fusebench under a real `accelerate launch`: workers die with their launcher, and the launch mode is said.

torch's elastic agent (which `accelerate launch` runs in-process) starts every worker with `start_new_session=True`,
so a `kill -9 -- -PGID` of the launcher's group never reaches them; fusebench asks the kernel for a parent-death
signal at start (`fusebench/distributed.py`). These tests start real 2-process launches on CPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
SMOKE = ROOT / "recipes" / "smoke.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _worker_logs(logs: Path, n: int, launcher: subprocess.Popen, timeout: float = 240) -> dict[int, str]:
    """pid -> log text of the launch's workers once n of them said how they were launched (one log per process,
    `run-<time>-<pid>.log`; the launch line comes after the process group is joined)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = {int(p.stem.rsplit("-", 1)[1]): p.read_text() for p in logs.glob("run-*.log")} if logs.is_dir() else {}
        if sum("launch:" in t for t in texts.values()) >= n:
            return texts
        assert launcher.poll() is None, f"the launch ended early:\n{launcher.stderr.read()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{n} workers did not start within {timeout}s")


def test_workers_die_with_their_launcher_when_its_process_group_is_killed(tmp_path):
    work = tmp_path / "work"
    cmd = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
           "--num_processes", "2", "--main_process_port", str(_free_port()), "-m", "fusebench.cli", "run",
           str(SMOKE), "--only", "model:fusellm", "--workdir", str(work)]
    launcher = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # its own group, as a shell job or SLURM step
    try:
        logs = _worker_logs(work / "logs", 2, launcher)
        workers = sorted(logs)
        assert launcher.pid not in workers
        for text in logs.values():  # the launch said what it is: both ranks in one gloo group
            assert "launch: accelerate launch, world size 2" in text and "backend gloo" in text, text
            assert "WARNING" not in text
        os.killpg(launcher.pid, signal.SIGKILL)  # kill -9 -- -PGID
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in workers if _alive(p)]
        assert not survivors, f"workers {survivors} outlived their launcher (kill -9 of its process group)"
    finally:
        for pid in _worker_logs(work / "logs", 0, launcher):
            if _alive(pid) and b"fusebench" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)  # only the workers this test started


def test_a_two_process_launch_that_runs_one_process_says_so(tmp_path):
    """`accelerate launch --num_processes 2 --cpu` starts one process: the run logs world size 1 and warns."""
    work = tmp_path / "work"
    cmd = [str(ACCELERATE), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "-m", "fusebench.cli", "run", str(SMOKE), "--only", "corpus:general",
           "--workdir", str(work)]
    proc = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launch: accelerate launch, world size 1 (this is rank 0), backend none" in proc.stderr
    assert "the launcher asked for 2 processes but 1 runs" in proc.stderr
    assert "--multi_gpu --num_processes N" in proc.stderr  # and how to get them


def test_a_plain_process_logs_its_launch_and_warns_about_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "run", str(SMOKE), "--only", "corpus:general",
                           "--workdir", str(tmp_path / "work")], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launch: plain process, world size 1 (this is rank 0), backend none, distributed type none" in proc.stderr
    assert "WARNING" not in proc.stderr


def _without_deepspeed(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine after a plain install.sh: `import deepspeed` fails (a package on PYTHONPATH that
    raises what a missing one raises; CI installs DeepSpeed for the rehearsal, so it cannot just be absent)."""
    shadow = tmp_path / "no_deepspeed" / "deepspeed"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'deepspeed'\")\n")
    return {**_env(), "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)])}


def test_plan_checks_a_deepspeed_config_and_names_the_install_command(tmp_path):
    config = ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml"
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "plan", str(SMOKE), "--accelerate-config",
                           str(config), "--workdir", str(tmp_path / "w")], env=_without_deepspeed(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"accelerate config {config} sets distributed_type: DEEPSPEED" in proc.stderr
    assert "bash install.sh --deepspeed" in proc.stderr
    ddp = subprocess.run([sys.executable, "-m", "fusebench.cli", "plan", str(SMOKE), "--accelerate-config",
                          str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--workdir", str(tmp_path / "w")],
                         env=_without_deepspeed(tmp_path), capture_output=True, text=True, timeout=120)
    assert ddp.returncode == 0 and "ddp.yaml: MULTI_GPU" in ddp.stdout, ddp.stderr[-2000:]


def test_a_deepspeed_launch_without_deepspeed_stops_at_start_with_the_install_command(tmp_path):
    """What each worker sees under the DeepSpeed config (accelerate sets ACCELERATE_USE_DEEPSPEED for it)."""
    env = {**_without_deepspeed(tmp_path), "ACCELERATE_USE_DEEPSPEED": "true"}
    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "run", str(SMOKE), "--only", "corpus:general",
                           "--workdir", str(tmp_path / "w")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "bash install.sh --deepspeed" in proc.stderr
    assert not list((tmp_path / "w").glob("cache/corpus/*"))  # nothing ran


def test_install_sh_offers_deepspeed_and_refuses_unknown_options():
    proc = subprocess.run(["bash", str(ROOT / "install.sh"), "--deepspeeed"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--deepspeed" in proc.stderr, proc.stderr
