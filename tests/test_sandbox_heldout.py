"""Attacks beyond issue 18's list, tried on the sandbox as it stands (the held-out set): what the program holds
when it starts, PID 1 under signals, limits and privileges it might raise, the private /dev/shm's cap, and what
the kernel tells it about the host. Each engine that works here is attacked (bwrap; as root also the unshare
fallback); each test asserts nothing was left behind (`sandbox_audit.leaves_nothing`).
"""

from __future__ import annotations

import textwrap

import pytest

from fusebench.sandbox import Limits, SandboxError, resolve, run
from sandbox_audit import ROOT_ONLY, SMALL, leaves_nothing, run_py  # noqa: F401 (fixture)

pytestmark = [pytest.mark.toolchains, ROOT_ONLY]


def _works(engine: str) -> bool:
    try:
        return resolve(engine) == engine
    except SandboxError:
        return False


ENGINES = [pytest.param(e, marks=pytest.mark.skipif(not _works(e), reason=f"the {e} engine does not run here"))
           for e in ("bwrap", "namespaces")]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_program_holds_only_its_stdio(engine, leaves_nothing):
    # no status pipe, marker, seccomp filter or file memfd of the engine's may reach the program (it could write
    # to a channel the evaluator reads, or hold a file the engine copies in)
    code = """
    import os
    print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))
    """
    result = run(["python3", "main.py"], files={"main.py": textwrap.dedent(code), "data/extra.txt": "x"},
                 limits=SMALL, mode=engine)
    assert result.status == "passed", result.stdout + result.stderr
    assert result.stdout.split("\n")[0] == "[0, 1, 2, 3]", result.stdout  # 3: the directory listing itself


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("exit_code", [0, 1])
def test_signals_to_pid_1_change_nothing(engine, exit_code, leaves_nothing):
    # PID 1 (the launcher, or the unshare engine's root shell) ignores signals from inside; kill(-1) reaches every
    # other process of the sandbox, not the evaluator; the verdict is still the program's own exit status
    code = f"""
    import os, signal, sys, time
    for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGSEGV):
        try:
            os.kill(1, sig)
        except OSError as e:
            print('kill', sig, e.errno)
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    os.kill(-1, signal.SIGKILL)  # everything but PID 1 and this process: the sleeping child
    print(os.wait()[1] & 0x7f, flush=True)
    sys.exit({exit_code})
    """
    result = run_py(code, mode=engine)
    assert result.status == ("passed" if exit_code == 0 else "failed"), result
    assert result.exit_code == exit_code and result.stdout.split()[-1] == "9", result


@pytest.mark.parametrize("engine", ENGINES)
def test_limits_privileges_and_namespaces_cannot_be_raised(engine, leaves_nothing):
    code = """
    import ctypes, os, resource, subprocess, sys
    libc = ctypes.CDLL(None, use_errno=True)
    gained = []
    for kind in (resource.RLIMIT_NPROC, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE):
        try:
            resource.setrlimit(kind, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            gained.append(('rlimit', kind))
        except (ValueError, OSError):
            pass
    # raw clone with namespace flags (SIGCHLD = 17): NEWNS, NEWNET, NEWUSER, NEWPID
    for flag in (0x00020000, 0x40000000, 0x10000000, 0x20000000):
        pid = libc.syscall(ctypes.c_long(56), ctypes.c_long(flag | 17), 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)
        if pid > 0:
            gained.append(('clone', hex(flag)))
            os.waitpid(pid, 0)
    for call in ((164, 0, 0), (105, 0), (113, 0, 0)):  # settimeofday, setuid(0), setreuid(0, 0)
        if libc.syscall(*map(ctypes.c_long, call)) == 0:
            gained.append(('syscall', call[0]))
    su = subprocess.run(['su', '-c', 'id -u'], input='', capture_output=True, text=True, timeout=5)
    if su.stdout.strip() == '0':
        gained.append('su')
    # kernel knobs and cgroup limits, rewritten with their own value; those of the sandbox's own IPC and PID
    # namespaces (bwrap's user namespace owns them) change nothing outside it
    own = ('/proc/sys/fs/mqueue/', '/proc/sys/kernel/msg', '/proc/sys/kernel/sem', '/proc/sys/kernel/shm',
           '/proc/sys/kernel/auto_msgmni', '/proc/sys/kernel/pid_max')
    for root in ('/sys', '/proc/sys'):
        for path, dirs, files in os.walk(root):
            for knob in [os.path.join(path, f) for f in files]:
                if knob.startswith(own) or not os.access(knob, os.W_OK):
                    continue
                try:
                    value = open(knob).read()
                    with open(knob, 'w') as f:
                        f.write(value)
                    gained.append(('wrote', knob))
                except OSError:
                    pass
    print(gained)
    sys.exit(1 if gained else 0)
    """
    result = run_py(code, Limits(**{**SMALL.__dict__, "wall_s": 10}), mode=engine)
    assert result.status == "passed", result.stdout + result.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_dev_shm_stops_at_its_cap(engine, leaves_nothing):
    code = """
    import sys
    written = 0
    try:
        with open('/dev/shm/fill', 'wb') as f:
            for _ in range(64):
                f.write(b'x' * (1 << 20))
                f.flush()
                written += 1 << 20
    except OSError as e:
        print(written, e.errno)
        sys.exit(0)
    sys.exit(1)
    """
    result = run_py(code, mode=engine)
    assert result.status == "passed", result.stdout + result.stderr
    assert int(result.stdout.split()[0]) <= SMALL.shm_bytes
