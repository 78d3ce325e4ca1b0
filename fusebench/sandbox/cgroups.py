"""One cgroup per sandboxed run: memory, process count and CPU quota of the whole process tree, then kill + remove.

Works with cgroup v2 (memory.max, pids.max, cpu.max, cgroup.kill) and v1 (memory.limit_in_bytes, pids.max,
cpu.cfs_quota_us), controller by controller, wherever this process may create child groups. Where none is
writable the sandbox still has its per-process rlimits (and says so once). Groups are named
`fusebench-<evaluator pid>-<n>`; groups left by an evaluator that died without cleaning up (SIGKILL) are removed
by the next one.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
_V2_LIMIT = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
_V1_LIMIT = {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us"}
_PERIOD_US = 100_000
_counter = itertools.count()


def _mounts() -> tuple[list[Path], dict[str, Path]]:
    """cgroup2 mount points, and for v1 each controller's mount point (from /proc/self/mountinfo)."""
    v2, v1 = [], {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = (right.split() + ["", "", ""])[:3]
        mount_point = Path(left.split()[4])
        if fstype == "cgroup2":
            v2.append(mount_point)
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt in CONTROLLERS:
                    v1.setdefault(opt, mount_point)
    return v2, v1


@functools.lru_cache(maxsize=1)
def parents() -> dict[str, tuple[Path, str]]:
    """controller -> (directory this process may create child groups in, limit file name)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v2_mounts, v1_mounts = _mounts()
    except OSError:
        return {}
    found: dict[str, tuple[Path, str]] = {}
    for line in lines:
        hierarchy, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if hierarchy == "0":
            for mount in v2_mounts:
                parent = mount / rel
                try:
                    enabled = (parent / "cgroup.subtree_control").read_text().split()
                except OSError:
                    continue
                for name in CONTROLLERS:
                    if name in enabled:
                        found.setdefault(name, (parent, _V2_LIMIT[name]))
        else:
            for name in controllers.split(","):
                if name in CONTROLLERS and name in v1_mounts and name not in found:
                    found[name] = (v1_mounts[name] / rel, _V1_LIMIT[name])
    usable = {name: spot for name, spot in found.items() if _probe(*spot)}
    missing = [name for name in CONTROLLERS if name not in usable]
    if missing:
        warnings.warn(f"sandbox: no writable {'/'.join(missing)} cgroup here, so those limits are per process "
                      f"(rlimits) rather than for a run's whole process tree.", RuntimeWarning, stacklevel=2)
    return usable


def _probe(parent: Path, limit_file: str) -> bool:
    probe = parent / f"fusebench-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        return os.access(probe / limit_file, os.W_OK)
    finally:
        probe.rmdir()


@dataclass
class Cgroup:
    """The groups (one per hierarchy) that one run's processes live in."""

    dirs: list[Path] = field(default_factory=list)

    def enter(self) -> None:
        """Move the calling process (the sandbox's first process, before exec) into every group."""
        pid = str(os.getpid())
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(pid)

    def pids(self) -> set[int]:
        found = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def destroy(self) -> None:
        """Kill whatever is still inside and remove the groups (retrying while killed processes are reaped)."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():
                try:
                    (d / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for d in self.dirs:
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    for pid in self.pids():
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
        self.dirs = [d for d in self.dirs if d.exists()]


def create(memory_bytes: int, pids: int, cpus: float) -> Cgroup:
    """A fresh group in every usable hierarchy, with its limit written (a hierarchy that refuses is skipped)."""
    values = {"memory": str(memory_bytes), "pids": str(pids)}
    quota = max(int(cpus * _PERIOD_US), 1000)
    group = Cgroup()
    seen: set[Path] = set()
    for name, (parent, limit_file) in parents().items():
        _sweep_stale(parent)
        d = parent / f"fusebench-{os.getpid()}-{next(_counter)}"
        try:
            if parent not in seen:  # v2: one group serves all controllers
                d.mkdir()
                group.dirs.append(d)
                seen.add(parent)
            else:
                d = next(x for x in group.dirs if x.parent == parent)
            value = f"{quota} {_PERIOD_US}" if limit_file == "cpu.max" else \
                str(quota) if limit_file == "cpu.cfs_quota_us" else values[name]
            (d / limit_file).write_text(value)
        except OSError:
            continue
    return group


def _sweep_stale(parent: Path) -> None:
    """Remove empty groups left by evaluators that no longer exist."""
    for d in parent.glob("fusebench-*-*"):
        pid = d.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            try:
                d.rmdir()
            except OSError:
                pass
