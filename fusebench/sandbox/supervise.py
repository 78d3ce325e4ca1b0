"""Run one untrusted program under the chosen engine, with limits, and judge how it ended from out-of-band status.

The evaluator side of every engine: files go in through memfds (nothing on the host's disk, except in the weaker
`rlimits` mode), the first process joins a fresh cgroup, gets its rlimits, drops to an unprivileged uid when the
evaluator is root, and asks the kernel to kill it if the evaluator dies (PR_SET_PDEATHSIG). A SIGTERM to the
evaluator kills every live sandbox, removes its cgroup and files, then lets the signal do what it did before.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fusebench.sandbox import bwrap, cgroups, seccomp, unshare
from fusebench.sandbox.mode import resolve
from fusebench.sandbox.types import SYSTEM_PATH, WORK_DIR, Limits, Result, SandboxError, Status

# As root, each run gets its own uid from this range (no passwd entry needed), so RLIMIT_NPROC counts only its
# own processes and one sandbox can never signal another's.
UID_BASE, UID_COUNT = 61000, 2000
_uid_counter = itertools.count()
_used_modes: set[str] = set()
_used_uids: set[int] = set()
_live: dict[int, "_Run"] = {}
_PR_SET_PDEATHSIG = 1


def run(argv: list[str], *, files: dict[str, str | bytes] | None = None, limits: Limits = Limits(),
        env: dict[str, str] | None = None, mode: str | None = None) -> Result:
    """Run `argv` in a fresh work directory holding `files` (relative name -> content), under `limits`.

    argv[0] should be an absolute path or a name on the system PATH. The environment is clean (PATH, HOME and
    TMPDIR = the work directory, LANG) plus `env`. `mode` overrides FUSEBENCH_SANDBOX_MODE. Raises SandboxError
    when no sandbox can run here and the weaker mode was not named."""
    engine = resolve(mode)
    if engine == "rlimits" and "rlimits" not in _used_modes:
        warnings.warn("sandbox: FUSEBENCH_SANDBOX_MODE=rlimits — generated code runs UNSANDBOXED (resource limits "
                      "only); results are marked `unsandboxed`.", RuntimeWarning, stacklevel=2)
    _used_modes.add(engine)
    return _run(engine, argv, files or {}, limits, env or {})


def modes_used() -> list[str]:
    """The engines this process has run programs under (for eval manifests)."""
    return sorted(_used_modes)


def uids_used() -> set[int]:
    """The uids this process has run sandboxes as (root only): what an audit for leftovers looks for."""
    return set(_used_uids)


def probe(engine: str) -> str | None:
    """None if `engine` runs a trivial program here; otherwise what went wrong."""
    result = _run(engine, ["/bin/sh", "-c", "test \"$(cat probe)\" = ok"], {"probe": "ok"},
                  Limits(wall_s=20, cpu_s=10), {})
    return None if result.passed else f"{result.status}: {result.stderr.strip()[-300:] or result.exit_code}"


@dataclass
class _Run:
    proc: subprocess.Popen | None = None
    group: cgroups.Cgroup = field(default_factory=cgroups.Cgroup)
    host_dir: Path | None = None
    uid: int | None = None
    uid_lock: int | None = None  # fd holding the uid's lock file

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc)
            self.proc.wait()
        if self.uid is not None and self.host_dir is not None:  # rlimits mode as root: setsid() escapees too
            _kill_all_of_uid(self.uid)
        self.group.destroy()
        if self.host_dir is not None:
            shutil.rmtree(self.host_dir, ignore_errors=True)
        if self.uid_lock is not None:
            os.close(self.uid_lock)  # releases the uid for the next run
            self.uid_lock = None


def _run(engine: str, argv: list[str], files: dict[str, str | bytes], limits: Limits,
         env: dict[str, str]) -> Result:
    uid, uid_lock = _claim_uid() if os.geteuid() == 0 else (None, None)
    state = _Run(uid=uid, uid_lock=uid_lock)
    if uid is not None:
        _used_uids.add(uid)
    fds: list[int] = []
    token = next(_uid_counter)
    _live[token] = state
    old = _install_sigterm()
    try:
        state.group = cgroups.create(limits.cgroup_total_bytes, limits.processes, limits.cpus)
        ready_r, ready_w = os.pipe()
        status_r, status_w = os.pipe()
        fds += [ready_r, ready_w, status_r, status_w]
        if engine == "rlimits":
            state.host_dir = Path(tempfile.mkdtemp(prefix="fusebench-sandbox-"))
            _write_files(state.host_dir, files, uid)
            cmd, cwd, inside, passed = list(argv), str(state.host_dir), str(state.host_dir), ()
        else:
            file_fds = {name: _memfd(name, content) for name, content in _checked(files).items()}
            fds += file_fds.values()
            inside_uid = uid if uid is not None else os.getuid()
            filter_fd = _memfd("seccomp", seccomp.program())
            fds.append(filter_fd)
            prctl = seccomp.syscall_number("prctl")
            if engine == "bwrap":
                cmd = bwrap.command(argv, uid=inside_uid, limits=limits, file_fds=file_fds, status_fd=status_w,
                                    ready_fd=ready_w, seccomp_fd=filter_fd, prctl_number=prctl)
            else:
                cmd = unshare.command(argv, uid=inside_uid, limits=limits, file_fds=file_fds, ready_fd=ready_w,
                                      seccomp_fd=filter_fd, prctl_number=prctl)
            # the marker's write end, (bwrap) the status pipe's, the files' memfds and the filter's: everything
            # opened after the pipes. The unshare engine has no status pipe: the program must not hold one.
            status = (status_w,) if engine == "bwrap" else ()
            cwd, inside, passed = "/", WORK_DIR, (ready_w, *status, *fds[4:])
        clean_env = {"PATH": SYSTEM_PATH, "HOME": inside, "TMPDIR": inside, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                     **env}
        # the namespaces engine drops uid itself (setpriv), after its root-only mounts
        switch_to = None if engine == "namespaces" else uid
        start = time.monotonic()
        try:
            state.proc = subprocess.Popen(
                cmd, cwd=cwd, env=clean_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, pass_fds=passed,
                preexec_fn=_child_setup(state.group, limits, switch_to))
        except (OSError, subprocess.SubprocessError) as exc:
            return Result("error", None, "", f"could not start the sandbox: {exc}", 0.0, False, engine)
        for fd in (ready_w, status_w):
            os.close(fd)
            fds.remove(fd)
        out, err, truncated, timed_out = _collect(state.proc, limits, start)
        elapsed = time.monotonic() - start
        ready = engine == "rlimits" or _drain(ready_r) == b"R"
        status_doc = _drain(status_r)
        return _judge(engine, state.proc.returncode, status_doc, ready, timed_out, out, err, elapsed, truncated)
    finally:
        for fd in fds:
            os.close(fd)
        state.cleanup()
        _live.pop(token, None)
        _restore_sigterm(old)


def _claim_uid() -> tuple[int, int]:
    """A sandbox uid no other live run (of any evaluator on this host) holds: an flock on /run/fusebench-sandbox/
    <uid>.lock, kept until the run is cleaned up (the kernel drops it if the evaluator dies)."""
    locks = Path("/run/fusebench-sandbox") if Path("/run").is_dir() else Path(tempfile.gettempdir(), "fusebench-uids")
    locks.mkdir(mode=0o700, exist_ok=True)
    start = (os.getpid() * 7 + next(_uid_counter)) % UID_COUNT
    for i in range(UID_COUNT):
        uid = UID_BASE + (start + i) % UID_COUNT
        fd = os.open(locks / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise SandboxError(f"all {UID_COUNT} sandbox uids ({UID_BASE}-{UID_BASE + UID_COUNT - 1}) are in use by "
                       f"running sandboxes; wait for some to finish.")


def _judge(engine: str, returncode: int, status_doc: bytes, ready: bool, timed_out: bool, out: bytes, err: bytes,
           elapsed: float, truncated: bool) -> Result:
    code = returncode
    if engine == "bwrap":  # bwrap's exit code report; bwrap's own exit status when it was killed before writing it
        for line in status_doc.decode("utf-8", "replace").splitlines():
            try:
                code = int(json.loads(line).get("exit-code", code))
            except (ValueError, AttributeError):
                continue
    signal_no = -code if code < 0 else (code - 128 if engine != "rlimits" and 128 < code <= 128 + 64 else 0)
    # "error" is the sandbox's own failure (it never reached the program), known only from the out-of-band
    # marker. "killed" is SIGKILL, which a program does not send itself by accident: the OOM killer or the hard
    # CPU limit. A crash (SIGSEGV, SIGABRT from a failed C++ assert) is an ordinary failure.
    status: Status
    if timed_out or signal_no == signal.SIGXCPU:
        status = "timeout"
    elif not ready:
        status = "error"
    elif code == 0:
        status = "passed"
    elif signal_no == signal.SIGKILL:
        status = "killed"
    else:
        status = "failed"
    exit_code = None if timed_out or status == "error" else (128 + signal_no if signal_no else code)
    return Result(status, exit_code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), elapsed,
                  truncated, engine)


def _checked(files: dict[str, str | bytes]) -> dict[str, bytes]:
    checked = {}
    for name, content in files.items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts or "\n" in name:
            raise ValueError(f"sandbox file name {name!r} must be a relative path inside the work directory")
        checked[str(path)] = content.encode() if isinstance(content, str) else content
    return checked


def _memfd(name: str, content: bytes) -> int:
    fd = os.memfd_create(f"fusebench-{PurePosixPath(name).name}", 0)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_files(root: Path, files: dict[str, str | bytes], uid: int | None) -> None:
    for name, content in _checked(files).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if uid is not None:
        for dirpath, dirnames, filenames in os.walk(root):
            os.chown(dirpath, uid, uid)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), uid, uid)


def _child_setup(group: cgroups.Cgroup, limits: Limits, uid: int | None):
    libc = ctypes.CDLL(None, use_errno=True)

    def in_child() -> None:  # between fork and exec: simple calls only
        group.enter()
        _set_limits(limits)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if os.getuid() == 0 or os.geteuid() == 0:
                os._exit(126)  # never let untrusted code (or bwrap) start as root
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
    return in_child


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


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _collect(proc: subprocess.Popen, limits: Limits, start: float) -> tuple[bytes, bytes, bool, bool]:
    """Read both pipes until the program ends or its wall-clock time is up; keep at most output_bytes of each.
    Excess output is read and dropped so a chatty program cannot block on a full pipe."""
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
    try:  # output pipes closed does not mean the process is gone
        proc.wait(timeout=max(limits.wall_s - (time.monotonic() - start), 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return bytes(kept[proc.stdout]), bytes(kept[proc.stderr]), truncated, timed_out


def _kill_group(proc: subprocess.Popen) -> None:
    # The first process leads its own session; killing bwrap / unshare takes its PID namespace down with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_all_of_uid(uid: int) -> None:
    """Kill every process running as `uid`: kill(-1) from a process with that uid reaches exactly those."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _on_sigterm(signum, frame) -> None:
    for state in list(_live.values()):
        state.cleanup()
    _live.clear()
    previous = _previous_handler[0]
    signal.signal(signal.SIGTERM, previous)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        os.kill(os.getpid(), signal.SIGTERM)


_previous_handler: list = [signal.SIG_DFL]


def _install_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm or current == signal.SIG_IGN:
        return None
    _previous_handler[0] = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    return current


def _restore_sigterm(old) -> None:
    if old is not None and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, old)
