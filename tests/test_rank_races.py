"""Files every rank of a launch writes into the shared workdir at the same moment.

Found by CI: under `accelerate launch --num_processes 2` both ranks probed the workdir with the same
`logs/.write-test` file; one rank unlinked it between the other's write and unlink, and that rank stopped with
"cannot write to the workdir ...: No such file or directory" although the directory was writable. Any fixed
temporary name shared by two processes races the same way, so each writer here is run from two processes at once.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path


def _in_two_processes(target, *args) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0], "a process failed: see its traceback above"


def _probe_workdir(workdir: str, times: int) -> None:
    import logging

    from fusebench.pipeline.commands import _setup_logging

    for _ in range(times):
        _setup_logging(Path(workdir))
        for handler in logging.getLogger("fusebench").handlers:
            handler.close()


def test_probing_the_workdir_leaves_another_processs_probe_alone(tmp_path):
    """Deterministic form of the race: a probe file of another process is in flight when this one probes."""
    from fusebench.pipeline.commands import _setup_logging

    logs = tmp_path / "logs"
    logs.mkdir()
    theirs = logs / ".write-test"
    theirs.write_text("another rank's probe")
    _setup_logging(tmp_path)
    assert theirs.read_text() == "another rank's probe"
    assert not [p for p in logs.iterdir() if p.name.startswith(".write-test") and p != theirs]


def test_two_ranks_probe_the_same_workdir_at_once(tmp_path):
    _in_two_processes(_probe_workdir, str(tmp_path), 300)


def _write_bbh(out_dirs: list[str]) -> None:
    from fusebench.evaluate.bbh_offline import write_bbh_jsonl

    for out in out_dirs:
        write_bbh_jsonl(Path(out), ("navigate", "snarks"))


def test_two_ranks_write_the_packaged_bbh_files_at_once(tmp_path):
    outs = [str(tmp_path / f"bbh{i}") for i in range(100)]
    _in_two_processes(_write_bbh, outs)
    for out in outs:
        files = sorted(p.name for p in Path(out).iterdir())
        assert files == ["navigate.jsonl", "snarks.jsonl"], files  # no temporary left behind
        assert all(json.loads(line) for line in (Path(out) / "navigate.jsonl").read_text().splitlines())


def _write_manifests(path: str, times: int) -> None:
    from fusebench.evaluate.manifest import write_json

    for i in range(times):
        write_json({"i": i, "pad": "x" * 4096}, Path(path))


def test_two_ranks_write_the_same_json_at_once(tmp_path):
    times = 300
    target = tmp_path / "out" / "manifest.json"
    _in_two_processes(_write_manifests, str(target), times)
    assert json.loads(target.read_text())["i"] == times - 1
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]


def _wait_for_open(path: Path, proc, timeout: float) -> None:
    """Block until some process opens `path` (inotify IN_OPEN): the launch's main process trying the stage's lock,
    i.e. after it found the stage unfinished. Deterministic, unlike sleeping and hoping it got there."""
    import ctypes
    import os
    import select
    import time

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, str(path).encode(), 0x20) >= 0  # IN_OPEN
    try:
        end = time.time() + timeout
        while time.time() < end:
            if select.select([fd], [], [], 1.0)[0]:
                return
            assert proc.poll() is None, f"the launch ended before taking the lock:\n{proc.communicate()[1][-3000:]}"
        raise AssertionError("the launch never tried the stage's lock")
    finally:
        os.close(fd)


def test_a_stage_another_run_finishes_while_a_launch_waits_for_its_lock_is_taken_as_finished(tmp_path):
    """Issue 21 (1): under a 2-process launch the main process re-checks a stage after taking its lock. Another run
    sharing the workdir holds the lock and finishes the stage meanwhile; the launch used to run it again and crash
    renaming its `.partial` onto the finished dir (OSError: [Errno 39] Directory not empty)."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    from filelock import FileLock

    from fusebench.cli import main

    smoke = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
    other = tmp_path / "other"
    assert main(["run", str(smoke), "--only", "corpus:mix", "--workdir", str(other)]) == 0
    (finished,) = (other / "cache" / "corpus").glob("mix-*[0-9a-f]")
    final = tmp_path / "w" / "cache" / "corpus" / finished.name
    final.parent.mkdir(parents=True)
    lock = FileLock(str(final) + ".lock")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with lock:  # the other run is working on the stage
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "fusebench.cli",
                                 "run", str(smoke), "--only", "corpus:mix", "--workdir", str(tmp_path / "w")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_open(Path(str(final) + ".lock"), proc, timeout=300)
            staged = Path(shutil.copytree(finished, final.with_name(final.name + ".copy")))
            staged.rename(final)  # ... and finishes it, atomically, before letting go of the lock
        except BaseException:
            proc.kill()
            raise
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, "\n".join(l for l in err.splitlines() if "rank0" in l)[-3000:]
    assert "finished by another run" in err and "Directory not empty" not in err
    assert not final.with_name(final.name + ".partial").exists()
