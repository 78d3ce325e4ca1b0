"""What "nothing left behind" means for a sandboxed run, and small runners, shared by the sandbox attack tests."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from fusebench.sandbox import Limits, cgroups, run, uids_used

REPO = Path(__file__).resolve().parents[1]
SMALL = Limits(wall_s=4, cpu_s=3, processes=64, cgroup_total_bytes=256 << 20, data_bytes=512 << 20,
               disk_bytes=16 << 20, shm_bytes=4 << 20, file_bytes=64 << 20, output_bytes=4096)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the attack suite runs as root (CI), like the issue")


def sandbox_pids(uids: set[int] | None = None) -> set[int]:
    """Live processes running as one of the uids this test process gave its sandboxes (other sessions on the
    machine may be running sandboxes of their own), or as one of `uids`."""
    uids = uids_used() if uids is None else uids
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            state = next(line for line in status.splitlines() if line.startswith("State:")).split()[1]
            if uid in uids and state != "Z":
                pids.add(int(entry.name))
    return pids


def our_cgroups(pid: int) -> list[Path]:
    return [d for parent, _ in cgroups.parents().values() for d in parent.glob(f"fusebench-{pid}-*")]


def host_state() -> dict:
    return {"shm": _ipc_ids("shm"), "sem": _ipc_ids("sem"), "msg": _ipc_ids("msg"),
            "mounts": _mounts_a_sandbox_could_leak(),
            "tmp_dirs": {p.name for p in Path("/tmp").glob("fusebench-sandbox-*") if _owner(p) in _ours()}}


def _ours() -> set[int]:
    """The uids this process ran sandboxes as, or (not root) its own: other sessions on a shared machine make SysV
    IPC objects and sandbox temp dirs of their own while a test runs, which are no leak of this one."""
    return uids_used() | ({os.getuid()} if os.geteuid() != 0 else set())


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def _ipc_ids(kind: str) -> set[str]:
    lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
    columns = lines[0].split()
    uid, cuid = columns.index("uid"), columns.index("cuid")
    return {row[1] for row in map(str.split, lines[1:]) if {int(row[uid]), int(row[cuid])} & _ours()}


# Where a sandbox mounts (its own namespace) — a mount appearing there on the host would be a leak. Other mounts
# may come and go with unrelated work on a shared machine.
_SANDBOX_MOUNT_POINTS = ("/", "/tmp", "/var/tmp", "/dev", "/dev/shm", "/run/lock", "/proc", "/usr", "/etc", "/opt")


def _mounts_a_sandbox_could_leak() -> list[tuple[str, str]]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point, fstype = line.split()[4], line.split(" - ")[1].split()[0]
        if point in _SANDBOX_MOUNT_POINTS or point.startswith(("/tmp/", "/newroot")):
            found.append((point, fstype))
    return sorted(found)


@pytest.fixture()
def leaves_nothing():
    """Snapshot the host before the test; afterwards assert no process, cgroup, mount, IPC object or temp dir
    of a sandbox remains."""
    before = host_state()
    yield
    deadline = time.monotonic() + 10  # killed processes are reaped asynchronously
    while sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_pids() == set(), f"sandbox processes outlived their run: {sandbox_pids()}"
    assert our_cgroups(os.getpid()) == [], f"cgroups left: {our_cgroups(os.getpid())}"
    after = host_state()
    for kind in ("shm", "sem", "msg", "tmp_dirs"):
        assert after[kind] <= before[kind], f"{kind} left: {after[kind] - before[kind]}"
    assert after["mounts"] == before["mounts"], f"mounts changed: {before['mounts']} -> {after['mounts']}"


def run_py(code: str, limits: Limits = SMALL, **kw):
    """Run `code` (dedented) with python3 in the sandbox."""
    return run(["python3", "main.py"], files={"main.py": textwrap.dedent(code)}, limits=limits, **kw)


def run_c(code: str, limits: Limits = SMALL):
    """Compile `code` with gcc and run it, in one sandbox (more time: the compiler runs too)."""
    limits = Limits(**{**limits.__dict__, "wall_s": max(limits.wall_s, 15), "cpu_s": max(limits.cpu_s, 10)})
    return run(["/bin/sh", "-c", "gcc -O0 -o m m.c && exec ./m"], files={"m.c": textwrap.dedent(code)},
               limits=limits)


def in_cgroup_of(pid: int, evaluator: int) -> bool:
    try:
        return f"fusebench-{evaluator}-" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def uid_of(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None
