"""Run one untrusted program (model-written code) in a throwaway directory, with limits, and report what happened.

The strongest isolation this machine allows is picked once per process (`sandbox_mode()`), weakest last:

* ``namespaces`` (root, and `unshare` from util-linux works): the program runs inside new mount, network and PID
  namespaces. The network namespace has only a down loopback, so nothing is reachable. The mount namespace gets
  private, size-capped tmpfs on /tmp, /var/tmp, /dev/shm and /run/lock, and the program's directory is a fresh
  /tmp/work inside it, holding a copy of its files: nothing it writes reaches the host's disk. It then drops to an
  unprivileged uid of its own (`setpriv`, no capabilities, no-new-privs), so the rest of the filesystem is read-only
  to it and RLIMIT_NPROC really applies (root ignores it). The program's PID namespace dies with its first process,
  so a timeout kills every descendant, even ones that called setsid().
* ``userns`` (not root, unprivileged user namespaces allowed): the same namespaces through `unshare --user`, but
  the program keeps the caller's uid, so files the caller may write outside /tmp stay writable.
* ``rlimits`` (neither works): only resource limits, a new session killed as a whole on timeout, a clean
  environment, and (as root) a uid switch. The network is reachable in this mode.

Resource limits in every mode (`resource.setrlimit` in the child): CPU seconds, RLIMIT_DATA (private writable
memory), optionally RLIMIT_AS, file size, open files, no core dumps, and a process count. RLIMIT_DATA is the default
memory cap rather than RLIMIT_AS because the JVM, V8 and Go reserve many GiB of address space they never touch;
RLIMIT_DATA counts only memory a process could actually dirty, so a 10 GB allocation still fails. When a memory
cgroup is writable (v1 or v2), the whole process tree also shares one memory cap (`cgroup_total_bytes`), which
closes the gap of many processes each using their per-process allowance.
"""

from __future__ import annotations

import functools
import itertools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "killed", "error"]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORK_DIR_INSIDE = "/tmp/work"
# Each sandbox gets its own uid from this range (no passwd entry needed), so RLIMIT_NPROC counts only its own
# processes and one sandbox can never signal another's.
_UID_BASE, _UID_COUNT = 61000, 2000
_uid_counter = itertools.count()
GiB, MiB = 1 << 30, 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use. Defaults suit MultiPL-E problems (tiny programs, plus their compilers)."""

    wall_s: float = 30.0
    cpu_s: int = 30
    data_bytes: int = 2 * GiB           # RLIMIT_DATA, per process
    address_space_bytes: int | None = None  # RLIMIT_AS, per process; None = unlimited (see module docstring)
    cgroup_total_bytes: int = 3 * GiB    # whole tree, when a memory cgroup can be made
    processes: int = 256                 # RLIMIT_NPROC counts threads too: the JVM starts ~20
    output_bytes: int = 64 * 1024        # of stdout and of stderr, each; the rest is drained and dropped
    file_bytes: int = 64 * MiB           # RLIMIT_FSIZE
    disk_bytes: int = 512 * MiB          # size of the private /tmp (namespaces modes)


@dataclass(frozen=True)
class ExecResult:
    status: Status
    exit_code: int | None     # None when it never ran or was killed by us; 128+n when signal n killed it
    stdout: str
    stderr: str
    elapsed_s: float
    truncated: bool           # True when stdout or stderr was longer than Limits.output_bytes

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# Runs as root inside the new namespaces, before the program: private tmpfs mounts, copy in the files (through the
# directory fd the parent passed, since the host's /tmp is hidden by then), then drop to the sandbox uid.
# Positional args: fd, uid, gid, tmpfs size, then the program's argv. bash stays PID 1 (no `exec` of the program),
# because PID 1 ignores default-action signals: the program keeps normal signal behaviour, and its exit status
# comes back as bash's (128+n for signal n).
_SETUP_FAILED = 254  # the inside script's own exit status when it could not prepare the sandbox
_INSIDE_SCRIPT = r"""
fail() { echo "sandbox setup failed: $1" >&2; exit 254; }
fd=$1; uid=$2; gid=$3; size=$4; shift 4
mount -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" tmpfs /tmp || fail "tmpfs on /tmp"
for d in /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o "size=16m,mode=1777,nosuid,nodev" tmpfs "$d" || fail "tmpfs on $d"; fi
done
mkdir -m 700 /tmp/work && cp -R "/proc/self/fd/$fd/." /tmp/work/ && cd /tmp/work || fail "copying the files in"
exec {fd}<&-  # bash closes the fd numbered $fd (dash only knows one-digit fds)
if [ "$uid" = "-" ]; then
  "$@"
  exit $?
fi
chown -R "$uid:$gid" /tmp/work || fail "chown"
setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
exit $?
"""


@functools.lru_cache(maxsize=1)
def sandbox_mode() -> str:
    """The strongest isolation that works here: "namespaces", "userns" or "rlimits" (see module docstring).

    `FUSEBENCH_SANDBOX_MODE` forces a weaker mode (for testing the fallbacks)."""
    forced = os.environ.get("FUSEBENCH_SANDBOX_MODE")
    if forced:
        return forced
    unshare = shutil.which("unshare", path=SYSTEM_PATH)
    if unshare and os.geteuid() == 0 and shutil.which("setpriv", path=SYSTEM_PATH) and \
            _probe([unshare, "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "true"]):
        return "namespaces"
    if unshare and _probe([unshare, "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork",
                           "--kill-child", "--mount-proc", "true"]):
        warnings.warn("sandbox: not root, so sandboxed programs keep your uid: they cannot reach the network or "
                      "the host's /tmp, but can write wherever you can. Run as root (e.g. in a container) for "
                      "full isolation.", RuntimeWarning, stacklevel=2)
        return "userns"
    warnings.warn("sandbox: neither `unshare` namespaces nor user namespaces work here, so sandboxed programs get "
                  "only resource limits and a kill-on-timeout process group: they CAN reach the network and write "
                  "wherever their user may. Install util-linux and run as root for real isolation.",
                  RuntimeWarning, stacklevel=2)
    return "rlimits"


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_sandboxed(argv: list[str], files: dict[str, str | bytes], limits: Limits = Limits(),
                  env: dict[str, str] | None = None) -> ExecResult:
    """Run `argv` with its working directory holding `files` (relative name -> content), under `limits`.

    argv[0] should be an absolute path or a name on the system PATH; `env` adds variables to the clean
    environment (PATH, HOME=TMPDIR=the work directory, LANG)."""
    mode = sandbox_mode()
    host_dir = Path(tempfile.mkdtemp(prefix="fusebench-sandbox-"))
    uid = _UID_BASE + (os.getpid() * 7 + next(_uid_counter)) % _UID_COUNT if os.geteuid() == 0 else None
    group = _cgroup_create(limits.cgroup_total_bytes)
    try:
        for name, content in files.items():
            path = host_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        inside = WORK_DIR_INSIDE if mode != "rlimits" else str(host_dir)
        clean_env = {"PATH": SYSTEM_PATH, "HOME": inside, "TMPDIR": inside, "LANG": "C.UTF-8",
                     "LC_ALL": "C.UTF-8", **(env or {})}
        dir_fd = None
        if mode == "rlimits":
            cmd, cwd = list(argv), str(host_dir)
            if uid is not None:
                _chown_tree(host_dir, uid)
        else:
            dir_fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
            ns = ["--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
            if mode == "userns":
                ns = ["--user", "--map-root-user", *ns]
            ids = [str(uid), str(uid)] if mode == "namespaces" else ["-", "-"]
            cmd = [shutil.which("unshare", path=SYSTEM_PATH), *ns, "--", "/bin/bash", "-c", _INSIDE_SCRIPT, "sh",
                   str(dir_fd), *ids, str(limits.disk_bytes), *argv]
            cwd = "/"
        try:
            return _run(cmd, cwd, clean_env, limits, mode, uid, group, dir_fd)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
    finally:
        if mode == "rlimits" and uid is not None:
            _kill_all_of_uid(uid)
        _cgroup_destroy(group)
        shutil.rmtree(host_dir, ignore_errors=True)


def _run(cmd: list[str], cwd: str, env: dict[str, str], limits: Limits, mode: str, uid: int | None,
         group: Path | None, dir_fd: int | None) -> ExecResult:
    switch_uid = uid if mode == "rlimits" else None  # in namespaces mode setpriv switches, after the mounts

    def in_child() -> None:  # runs between fork and exec: only async-signal-safe-ish, simple calls
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        _set_limits(limits)
        if switch_uid is not None:
            os.setgroups([])
            os.setgid(switch_uid)
            os.setuid(switch_uid)

    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=in_child,
                                pass_fds=(dir_fd,) if dir_fd is not None else ())
    except (OSError, subprocess.SubprocessError) as exc:
        return ExecResult("error", None, "", f"could not start the sandbox: {exc}", 0.0, False)
    out, err, truncated, timed_out = _collect(proc, limits, start)
    elapsed = time.monotonic() - start
    code = proc.returncode
    signal_no = -code if code < 0 else (code - 128 if mode != "rlimits" and 128 < code <= 128 + 64 else 0)
    # "error" is the sandbox's own failure, not the program's. "killed" is for SIGKILL, which a program does not
    # send itself by accident: the memory cgroup's OOM killer or the hard CPU limit. A crash (SIGSEGV, SIGABRT from
    # a failed C++ assert) is an ordinary failure.
    if code == _SETUP_FAILED and mode != "rlimits" and "sandbox setup failed" in err.decode("utf-8", "replace"):
        status: Status = "error"
    elif timed_out or signal_no == signal.SIGXCPU:
        status = "timeout"
    elif code == 0:
        status = "passed"
    elif signal_no == signal.SIGKILL:
        status = "killed"
    else:
        status = "failed"
    exit_code = None if timed_out else (128 + signal_no if signal_no else code)
    return ExecResult(status, exit_code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      elapsed, truncated)


def _collect(proc: subprocess.Popen, limits: Limits, start: float) -> tuple[bytes, bytes, bool, bool]:
    """Read both pipes until the program ends or its wall-clock time is up; keep at most output_bytes of each.

    Excess output is read and dropped (not left in the pipe) so a chatty program cannot block on a full pipe and
    turn into a timeout."""
    kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    truncated = timed_out = False
    with selectors.DefaultSelector() as sel:
        for pipe in kept:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            remaining = limits.wall_s - (time.monotonic() - start)
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = kept[key.fileobj]
                room = limits.output_bytes - len(buf)
                buf += chunk[:max(room, 0)]
                truncated |= len(chunk) > room
    if timed_out:
        _kill_group(proc)
    try:
        # Output pipes closed does not mean the process is gone (it may have closed them itself).
        proc.wait(timeout=max(limits.wall_s - (time.monotonic() - start), 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return bytes(kept[proc.stdout]), bytes(kept[proc.stderr]), truncated, timed_out


def _kill_group(proc: subprocess.Popen) -> None:
    # The child started a new session, so its pgid is its pid. In the namespace modes killing `unshare` and its
    # forked PID 1 takes the whole PID namespace down with them.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _set_limits(limits: Limits) -> None:
    def cap(kind: int, value: int) -> None:
        resource.setrlimit(kind, (value, value))

    # The soft CPU limit sends SIGXCPU (reported as a timeout); the hard one, a second later, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    cap(resource.RLIMIT_DATA, limits.data_bytes)
    if limits.address_space_bytes is not None:
        cap(resource.RLIMIT_AS, limits.address_space_bytes)
    cap(resource.RLIMIT_FSIZE, limits.file_bytes)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, 1024)
    cap(resource.RLIMIT_NPROC, limits.processes)


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid)


def _kill_all_of_uid(uid: int) -> None:
    """rlimits mode, as root: kill every process still running as the sandbox uid, including ones that escaped
    the process group with setsid(). kill(-1) from a process with that uid reaches exactly those."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


@functools.lru_cache(maxsize=1)
def _memory_cgroup_parent() -> tuple[Path, str] | None:
    """Our own memory cgroup (v1, or v2 with the memory controller delegated) and its limit file's name, if we
    may create children in it; None (with one warning) otherwise."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    candidates = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates.append((Path("/sys/fs/cgroup/memory" + rel), "memory.limit_in_bytes"))
        elif controllers == "":
            for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                candidates.append((Path(str(mount) + rel), "memory.max"))
    for parent, limit_file in candidates:
        probe = parent / f"fusebench-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            ok = (probe / limit_file).exists()
        finally:
            probe.rmdir()
        if ok:
            return parent, limit_file
    warnings.warn("sandbox: no writable memory cgroup, so memory is capped per process (RLIMIT_DATA) but not for "
                  "a sandbox's process tree as a whole.", RuntimeWarning, stacklevel=3)
    return None


def _cgroup_create(total_bytes: int) -> Path | None:
    found = _memory_cgroup_parent()
    if found is None:
        return None
    parent, limit_file = found
    group = parent / f"fusebench-{os.getpid()}-{next(_uid_counter)}"
    try:
        group.mkdir()
        (group / limit_file).write_text(str(total_bytes))
    except OSError:
        _cgroup_destroy(group)
        return None
    return group


def _cgroup_destroy(group: Path | None) -> None:
    if group is None or not group.exists():
        return
    for _ in range(250):  # exiting processes leave the cgroup a moment after they are reaped
        try:
            group.rmdir()
            return
        except OSError:
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
