"""The main engine: bubblewrap (`bwrap`, Debian's `bubblewrap`, the sandbox Flatpak uses).

bwrap is started already running as the sandbox's unprivileged uid (the evaluator switches uid before exec when it
is root), so it builds the sandbox inside an unprivileged user namespace: the program's kernel uid is that
unprivileged uid, never 0, with no capabilities, and it may not create further user namespaces. It gets new
user, PID, network, mount, IPC, UTS and cgroup namespaces. The network namespace holds only its own loopback
interface, which is up: the program can talk to itself on 127.0.0.1 but reach nothing outside (no other
interface, no route). Its root filesystem is read-only binds of the system directories (/usr, /etc and the /bin,
/lib... links), where /etc's files that are not world-readable (shadow, gshadow...) are covered by /dev/null; fresh
/proc and a read-only /dev; and, writable, only a size-capped tmpfs on /tmp (holding the work dir, filled from
memfds) and one on /dev/shm (bwrap's own tmpfs root is remounted read-only once the mounts are made). Nothing it
writes reaches the host's disk, and every process dies with the PID namespace when the program exits or bwrap dies.
A seccomp filter (`seccomp.py`) refuses syscalls a test program never needs (ptrace, keyctl, bpf, io_uring,
mount, unshare, pidfd_getfd, TIOCSTI, sockets but IP and netlink: unix sockets bound to a path and vsock are
beyond any network namespace...) and kills any non-native-ABI syscall; without libseccomp (or perl, below) this
engine refuses.

The verdict comes only from the kernel's wait status, read outside the sandbox: bwrap runs `--as-pid-1` (no
reaper of its own: bwrap's init reports the exit status on an eventfd that any same-uid process inside could take
with pidfd_getfd or /proc/1/fd, or rewrite through /proc/1/mem), so PID 1 is `LAUNCHER`, a few lines of perl
(perl-base is Essential in Debian) that make themselves non-dumpable (their /proc files, memory and fds are then
closed to the program), write a one-byte "set up" marker on a pipe and close it, run the program as their child
and exit with its status (128+n for signal n). bwrap's monitor, outside the PID namespace, waitpid()s PID 1 and
writes `{"exit-code": N}` to a pipe only the evaluator holds (`--json-status-fd`). So "the sandbox failed to set
up" is told apart from anything the program prints or exits with, and nothing inside holds a channel to the
verdict. The program itself keeps normal signal behaviour, as it is not PID 1.
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
PERL = "/usr/bin/perl"
# PID 1 inside, as the sandbox uid, under the seccomp filter. Args: marker fd, prctl's syscall number, the argv.
# PR_SET_DUMPABLE 0 first, so that once "set up" is reported nothing in the sandbox can open its /proc files or
# attach to it; the program, started by exec, is dumpable again (its own business). Orphans are reaped on the way.
# It exits as soon as the program does: the kernel then kills whatever the program left in the PID namespace.
LAUNCHER = r"""
use strict;
my ($ready, $prctl, $marker) = splice(@ARGV, 0, 2);
syscall($prctl + 0, 4, 0, 0, 0, 0) == 0 or die "fusebench sandbox: prctl(PR_SET_DUMPABLE, 0): $!\n";
open($marker, ">&=", $ready) && syswrite($marker, "R") == 1 && close($marker)
    or die "fusebench sandbox: marker: $!\n";
defined(my $child = fork) or die "fusebench sandbox: fork: $!\n";
if (!$child) {
    exec { $ARGV[0] } @ARGV;
    print STDERR "fusebench sandbox: cannot run $ARGV[0]: $!\n";
    exit 127;
}
while ((my $done = wait) != -1) {
    exit(($? & 127) ? 128 + ($? & 127) : $? >> 8) if $done == $child;
}
exit 1;
"""


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
            ready_fd: int, seccomp_fd: int, prctl_number: int) -> list[str]:
    """The bwrap command line that runs `argv` in WORK_DIR holding `file_fds` (relative name -> readable fd),
    under the seccomp filter read from `seccomp_fd` (`seccomp.program()`), below `LAUNCHER` as PID 1
    (`prctl_number`: prctl's syscall number on this architecture, `seccomp.syscall_number("prctl")`)."""
    exe = executable()
    assert exe is not None, "callers check engine availability first"
    args = [exe, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(uid), "--gid", str(uid),
            "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox",
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
    return [*args, "--chdir", WORK_DIR, "--", PERL, "-e", LAUNCHER, str(ready_fd), str(prctl_number), *argv]
