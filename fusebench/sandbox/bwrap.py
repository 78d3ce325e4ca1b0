"""The main engine: bubblewrap (`bwrap`, Debian's `bubblewrap`, the sandbox Flatpak uses).

bwrap is started already running as the sandbox's unprivileged uid (the evaluator switches uid before exec when it
is root), so it builds the sandbox inside an unprivileged user namespace: the program's kernel uid is that
unprivileged uid, never 0, with no capabilities, and it may not create further user namespaces. It gets new
user, PID, network (loopback only, down), mount, IPC, UTS and cgroup namespaces; a root filesystem of read-only
binds of the system directories (/usr, /etc and the /bin, /lib... links), where /etc's files that are not
world-readable (shadow, gshadow...) are covered by /dev/null; fresh /proc and a read-only /dev; and, writable,
only a size-capped tmpfs on /tmp (holding the work dir, filled from memfds) and one on /dev/shm (bwrap's own
tmpfs root is remounted read-only once the mounts are made). Nothing it writes
reaches the host's disk, and every process dies with the PID namespace when the program exits or bwrap dies.
A seccomp filter (`seccomp.py`) refuses syscalls a test program never needs (ptrace, keyctl, bpf, io_uring,
mount, unshare, TIOCSTI...) with EPERM and kills any non-native-ABI syscall; without libseccomp this engine refuses.

Status travels out of band: bwrap writes `{"exit-code": N}` to a pipe only the evaluator holds
(`--json-status-fd`), and a one-byte marker is written by the trusted launcher line inside the sandbox just before
it execs the program (`READY_SCRIPT`), so "the sandbox failed to set up" is told apart from anything the program
prints or exits with.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from fusebench.sandbox.types import SYSTEM_PATH, WORK_DIR, Limits

BWRAP = "bwrap"
RO_DIRS = ("/usr", "/etc", "/opt")
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Runs inside the sandbox as the sandbox uid, before the program: report "set up" on the marker fd, close it,
# exec the program. bash (Essential in Debian) because dash cannot name fds above 9.
READY_SCRIPT = 'fd=$1; shift; printf R >&"$fd" && exec {fd}>&- && exec "$@"'


def executable() -> str | None:
    return shutil.which(BWRAP, path=SYSTEM_PATH)


def _root_filesystem() -> list[str]:
    args = []
    for d in RO_DIRS:
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for link in ROOT_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    for entry in sorted(os.scandir("/etc"), key=lambda e: e.name):  # hide what only root may read
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if stat.S_ISLNK(mode) or mode & stat.S_IROTH:
            continue
        args += ["--tmpfs", entry.path] if stat.S_ISDIR(mode) else ["--ro-bind", "/dev/null", entry.path]
    return args


def command(argv: list[str], *, uid: int, limits: Limits, file_fds: dict[str, int], status_fd: int,
            ready_fd: int, seccomp_fd: int) -> list[str]:
    """The bwrap command line that runs `argv` in WORK_DIR holding `file_fds` (relative name -> readable fd),
    under the seccomp filter read from `seccomp_fd` (`seccomp.program()`)."""
    exe = executable()
    assert exe is not None, "callers check engine availability first"
    args = [exe, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(uid), "--gid", str(uid),
            "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--json-status-fd", str(status_fd), "--seccomp", str(seccomp_fd), *_root_filesystem(),
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.shm_bytes), "--perms", "1777", "--tmpfs", "/dev/shm",
            "--size", str(limits.disk_bytes), "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "0700", "--dir", WORK_DIR]
    made = {WORK_DIR}
    for name, fd in file_fds.items():
        dest = Path(WORK_DIR) / name
        for parent in reversed(dest.parents):
            if str(parent).startswith(WORK_DIR + "/") and str(parent) not in made:
                args += ["--dir", str(parent)]
                made.add(str(parent))
        args += ["--perms", "0644", "--file", str(fd), str(dest)]
    # bwrap's own root and /dev are tmpfs owned by the sandbox uid with no size cap: make them read-only last
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return [*args, "--chdir", WORK_DIR, "--", "/bin/bash", "-c", READY_SCRIPT, "sandbox", str(ready_fd), *argv]
