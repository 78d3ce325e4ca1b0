"""The fallback engine (root only, for machines without bubblewrap): util-linux `unshare` + `setpriv`.

A root bash script inside new mount, network, PID and IPC namespaces mounts private size-capped tmpfs on /tmp,
/var/tmp, /dev/shm and /run/lock, remounts every other mount read-only, copies the files in from memfds, reports
"set up" on the status fd and only then drops to the sandbox uid with `setpriv` (no capabilities, no-new-privs) and
runs `LOADER`, which loads the seccomp filter (`seccomp.py`, as bwrap's engine does) and execs the program. Every
fd of the engine's (marker, file memfds, filter) is closed before the program starts. Without `setpriv` or
libseccomp this engine refuses to run (see `mode.py`): it would otherwise run as root, or unfiltered.
bash stays PID 1 (no `exec` of the program), because PID 1 ignores default-action signals: the program keeps
normal signal behaviour, and its exit status comes back as bash's (128+n for signal n).
"""

from __future__ import annotations

import shutil

from fusebench.sandbox.types import SYSTEM_PATH, Limits

# Runs as the sandbox uid after setpriv (no-new-privs set, so an unprivileged process may load a filter). Args:
# the filter's fd, prctl's syscall number, the argv. struct sock_fprog is {unsigned short len; pointer}.
LOADER = r"""
use strict;
my ($fd, $prctl, $in) = splice(@ARGV, 0, 2);
open($in, "<&=", $fd) or die "fusebench sandbox: seccomp filter fd: $!\n";
my $bpf = do { local $/; <$in> };
close($in);
my $fprog = pack("S x![P] P", length($bpf) / 8, $bpf);
syscall($prctl + 0, 22, 2, $fprog) == 0 or die "fusebench sandbox: prctl(PR_SET_SECCOMP): $!\n";
exec { $ARGV[0] } @ARGV;
print STDERR "fusebench sandbox: cannot run $ARGV[0]: $!\n";
exit 127;
"""

# Positional args: status fd, uid, tmpfs size, shm size, filter fd, prctl's number, loader, number of files, then
# (fd, name) pairs, then the argv.
# A failure before the marker is written leaves the status fd empty: the evaluator reports "error" however the
# program would have exited.
_INSIDE = r"""
set -u
sfd=$1; uid=$2; size=$3; shm=$4; ffd=$5; prctl=$6; loader=$7; n=$8; shift 8
fail() { echo "fusebench sandbox (unshare engine): $1" >&2; exit 1; }
mount --make-rprivate / || fail "make-rprivate"
mount -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" tmpfs /tmp || fail "tmpfs on /tmp"
for d in /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o "size=$shm,mode=1777,nosuid,nodev" tmpfs "$d" || fail "tmpfs on $d"; fi
done
mkdir -m 700 /tmp/work || fail "work dir"
for ((i = 0; i < n; i++)); do
  fd=$1; name=$2; shift 2
  mkdir -p "$(dirname "/tmp/work/$name")" && cat "/proc/self/fd/$fd" >"/tmp/work/$name" || fail "copying $name"
  exec {fd}<&-
done
chown -R "$uid:$uid" /tmp/work || fail "chown"
# Every mount but the private tmpfs above becomes read-only in this namespace (world-writable host dirs too).
while read -r _ _ _ _ point _; do
  case "$point" in /tmp|/tmp/*|/var/tmp|/dev/shm|/run/lock|/proc|/proc/*|/sys/*) continue ;; esac
  mount -o remount,bind,ro "$point" 2>/dev/null || true
done </proc/self/mountinfo
touch /usr/.fusebench-rw-probe 2>/dev/null && { rm -f /usr/.fusebench-rw-probe; fail "root stayed writable"; }
cd /tmp/work || fail "cd"
printf R >&"$sfd"; exec {sfd}>&-
setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- \
  /usr/bin/perl -e "$loader" "$ffd" "$prctl" "$@"
exit $?
"""


def executables() -> tuple[str | None, str | None]:
    return shutil.which("unshare", path=SYSTEM_PATH), shutil.which("setpriv", path=SYSTEM_PATH)


def command(argv: list[str], *, uid: int, limits: Limits, file_fds: dict[str, int], ready_fd: int, seccomp_fd: int,
            prctl_number: int) -> list[str]:
    unshare, _ = executables()
    assert unshare is not None, "callers check engine availability first"
    pairs = [x for name, fd in file_fds.items() for x in (str(fd), name)]
    return [unshare, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc", "--",
            "/bin/bash", "-c", _INSIDE, "sandbox", str(ready_fd), str(uid), str(limits.disk_bytes),
            str(limits.shm_bytes), str(seccomp_fd), str(prctl_number), LOADER, str(len(file_fds)), *pairs, *argv]
