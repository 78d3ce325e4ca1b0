"""The sandbox's vocabulary: what a run may use (`Limits`), what came back (`Result`), and its one error type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fusebench.errors import FusebenchError

Status = Literal["passed", "failed", "timeout", "killed", "error"]
Mode = Literal["bwrap", "namespaces", "rlimits"]
MODES: tuple[str, ...] = ("bwrap", "namespaces", "rlimits")
UNSANDBOXED: tuple[str, ...] = ("rlimits",)  # modes that only limit resources: results carry `unsandboxed`
SECCOMP_FILTERED: tuple[str, ...] = ("bwrap", "namespaces")  # engines whose programs run under the seccomp filter
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORK_DIR = "/tmp/work"  # the program's working directory (and HOME, TMPDIR) inside the sandbox
GiB, MiB = 1 << 30, 1 << 20


class SandboxError(FusebenchError):
    """The sandbox refuses to run untrusted code here (unknown mode, no isolation available, root without setpriv)."""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use. Defaults suit MultiPL-E problems (tiny programs, plus their compilers)."""

    wall_s: float = 30.0
    cpu_s: int = 30                      # RLIMIT_CPU per process (soft: SIGXCPU = timeout, hard +1 s: SIGKILL)
    cpus: float = 1.0                    # cgroup CPU quota of the whole tree, in CPUs
    data_bytes: int = 2 * GiB            # RLIMIT_DATA, per process
    # RLIMIT_AS, per process; None = unlimited: the JVM, V8 and Go reserve many GiB of address space they never
    # touch, so RLIMIT_DATA (memory a process could actually dirty) plus the cgroup cap are the default.
    address_space_bytes: int | None = None
    cgroup_total_bytes: int = 3 * GiB    # memory of the whole tree (tmpfs included), when a memory cgroup exists
    processes: int = 256                 # cgroup pids.max and RLIMIT_NPROC (threads count: the JVM starts ~20)
    output_bytes: int = 64 * 1024        # of stdout and of stderr, each; the rest is drained and dropped
    file_bytes: int = 64 * MiB           # RLIMIT_FSIZE
    disk_bytes: int = 512 * MiB          # size of the private /tmp tmpfs (holds the work dir)
    shm_bytes: int = 16 * MiB            # size of the private /dev/shm tmpfs


@dataclass(frozen=True)
class Result:
    """How a sandboxed run ended. `status` comes from the sandbox's own out-of-band channel and the exit status,
    never from what the program printed; "error" means the sandbox itself failed before the program ran."""

    status: Status
    exit_code: int | None     # None when it never ran or was stopped by the wall clock; 128+n when signal n killed it
    stdout: str
    stderr: str
    elapsed_s: float
    truncated: bool           # True when stdout or stderr was longer than Limits.output_bytes
    mode: str = "bwrap"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def unsandboxed(self) -> bool:
        return self.mode in UNSANDBOXED
