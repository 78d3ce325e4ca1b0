"""Attacks on the sandbox through the evaluation's own entry point (`run_tests`) and `fusebench.sandbox.run`, in
Python and C: secrets, network, resource bombs, host directories, daemons, SysV IPC, unmounting, and the verdict
channel (a program taking another process's fds or memory to forge "passed", issue 18). Each asserts the attack was
contained AND that nothing was left behind on the host (`sandbox_audit.leaves_nothing`: processes of the sandbox's
uids, cgroups, mounts, SysV IPC objects, temp dirs). Small limits and short wall clocks keep it fast. The seccomp
filter's refusals: tests/test_sandbox_seccomp.py; the sandbox's own status, its modes and non-root use:
tests/test_sandbox_modes.py.
"""

from __future__ import annotations

import os
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from fusebench.evaluate.code_exec import run_tests
from fusebench.sandbox import Limits, cgroups, resolve
from sandbox_audit import REPO, ROOT_ONLY, SMALL, leaves_nothing, run_c, run_py  # noqa: F401 (fixture)

pytestmark = [pytest.mark.toolchains, ROOT_ONLY]
HOST_DIRS = ["/var/lib/php/sessions", "/var/tmp", "/dev/shm", "/tmp", "/run/lock", os.environ.get("HOME", "/root"),
             "/etc", "/usr/local", str(REPO)]


# ---- reading what is not ours ----------------------------------------------------------------------------------

def test_etc_shadow_is_unreadable(leaves_nothing):
    result = run_tests("py", "import sys\ntry:\n    print(open('/etc/shadow').read()[:20])\nexcept OSError as e:\n"
                       "    print('denied', e)\n    sys.exit(0)\nsys.exit(1)\n")
    assert result.status == "passed" and "denied" in result.stdout, result.stdout + result.stderr
    c = run_c('#include <stdio.h>\nint main(void) { FILE *f = fopen("/etc/shadow", "r"); '
           'if (!f) { puts("denied"); return 0; } printf("%c", fgetc(f)); return 1; }\n')
    assert c.status == "passed" and "denied" in c.stdout, c.stdout + c.stderr
    uid = run_py("import os\nprint(os.getuid(), os.geteuid(), open('/proc/self/status').read())\n")
    assert int(uid.stdout.split()[0]) != 0 and "CapEff:\t0000000000000000" in uid.stdout


def test_evaluator_environment_secrets_are_invisible(monkeypatch, leaves_nothing):
    secret = f"hunter2-{uuid.uuid4().hex}"
    monkeypatch.setenv("FUSEBENCH_ATTACK_SECRET", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    code = f"""
    import os, sys, glob
    found = [k for k, v in os.environ.items() if {secret!r} in v]
    for path in glob.glob('/proc/*/environ'):
        try:
            found += [path] if {secret!r}.encode() in open(path, 'rb').read() else []
        except OSError:
            pass
    print(found)
    sys.exit(1 if found else 0)
    """
    result = run_tests("py", textwrap.dedent(code))
    assert result.status == "passed", result.stdout + result.stderr
    c = run_c(f'#include <stdlib.h>\n#include <string.h>\nextern char **environ;\nint main(void) {{\n'
           f'  for (char **e = environ; *e; e++) if (strstr(*e, "{secret}")) return 1;\n  return 0;\n}}\n')
    assert c.status == "passed", c.stdout + c.stderr


def test_network_listener_on_host_loopback_is_unreachable(leaves_nothing):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = f"""
        import socket, sys
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=2).close()
        except OSError as e:
            print('unreachable', e)
            sys.exit(0)
        sys.exit(1)
        """
        result = run_tests("py", textwrap.dedent(code))
        assert result.status == "passed", result.stdout + result.stderr
        c = run_c(f"""
        #include <arpa/inet.h>
        #include <sys/socket.h>
        int main(void) {{
            int s = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {{.sin_family = AF_INET, .sin_port = htons({port})}};
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            return connect(s, (struct sockaddr *)&a, sizeof a) == 0;
        }}
        """)
        assert c.status == "passed", c.stdout + c.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever connected
    finally:
        server.close()


# ---- resource bombs ----------------------------------------------------------------------------------------------

def test_fork_bomb_hits_the_process_limit(leaves_nothing):
    code = """
    import os, time
    n = 0
    while True:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            os.setsid()
            time.sleep(60)
            os._exit(0)
        n += 1
    print(n, flush=True)
    """
    result = run_py(code)
    assert result.status == "passed", result.stdout + result.stderr
    assert int(result.stdout.split()[0]) < SMALL.processes
    c = run_c("#include <unistd.h>\nint main(void) { for (;;) fork(); }\n")
    assert c.status in ("timeout", "killed", "failed") and c.elapsed_s < 15 + 5


@pytest.mark.skipif("cpu" not in cgroups.parents(), reason="no writable cpu cgroup here")
def test_busy_processes_share_the_cpu_quota(leaves_nothing):
    # two busy processes for ~2 s of wall time: with cpus=1 their CPU time together stays near 1 CPU's worth
    code = """
    import os, resource, time
    start = time.monotonic()
    for _ in range(2):
        if os.fork() == 0:
            while time.monotonic() - start < 2:
                pass
            os._exit(0)
    for _ in range(2):
        os.wait()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(used.ru_utime + used.ru_stime, time.monotonic() - start)
    """
    result = run_py(code, Limits(**{**SMALL.__dict__, "wall_s": 10, "cpus": 1.0}))
    assert result.status == "passed", result.stdout + result.stderr
    cpu, wall = map(float, result.stdout.split())
    assert cpu <= 1.0 * wall * 1.25 + 0.2, (cpu, wall)


def test_memory_bomb_is_stopped(leaves_nothing):
    result = run_py("data = bytearray(10 * 2**30)\n")
    assert result.status == "failed" and "MemoryError" in result.stderr
    # touch 1 GiB in 32 MiB steps: over the 256 MiB cgroup (or the 512 MiB RLIMIT_DATA where no cgroup exists)
    c = run_c("""
    #include <stdlib.h>
    #include <string.h>
    int main(void) {
        for (int i = 0; i < 32; i++) { char *p = malloc(32 << 20); if (!p) return 3; memset(p, 1, 32 << 20); }
        return 0;
    }
    """)
    assert c.status in ("failed", "killed") and c.exit_code != 0, c


def test_disk_bomb_stops_at_the_private_cap(leaves_nothing):
    code = """
    import os, sys
    written = 0
    try:
        with open('fill', 'wb') as f:
            for _ in range(64):
                f.write(b'x' * (1 << 20))
                f.flush()
                written += 1 << 20
    except OSError as e:
        print(written, e.errno, flush=True)
        sys.exit(0)
    print(written)
    sys.exit(1)
    """
    result = run_py(code)
    assert result.status == "passed", result.stdout + result.stderr
    assert int(result.stdout.split()[0]) <= SMALL.disk_bytes


def test_writes_to_host_directories_never_reach_the_host(leaves_nothing):
    token = uuid.uuid4().hex
    targets = [f"{d}/fusebench-attack-{token}" for d in HOST_DIRS]
    code = f"""
    import sys
    for path in {targets!r}:
        try:
            with open(path, 'wb') as f:
                f.write(b'x' * (1 << 20))
            print('wrote-inside', path)
        except OSError as e:
            print('refused', path, e.errno)
    """
    try:
        result = run_tests("py", textwrap.dedent(code))
        assert result.status == "passed", result.stdout + result.stderr
        c = run_c('#include <stdio.h>\nint main(void) {\n' + "".join(
            f'  {{ FILE *f = fopen("{t}.c", "w"); if (f) {{ fputs("x", f); fclose(f); }} }}\n' for t in targets)
            + "  return 0;\n}\n")
        assert c.status == "passed", c.stdout + c.stderr
        leaked = [t for t in targets for p in (t, t + ".c") if Path(p).exists()]
        assert leaked == [], f"written to the host: {leaked}"
    finally:
        for t in targets:
            for p in (t, t + ".c"):
                Path(p).unlink(missing_ok=True)


def test_only_the_capped_tmpfs_mounts_are_writable_inside(leaves_nothing):
    # the sandbox's own root and /dev are tmpfs without a size cap: they must be read-only to the program
    code = """
    import os, sys
    wrote = []
    for d in ['/', '/dev', '/etc', '/usr', '/proc']:
        try:
            with open(os.path.join(d, 'fusebench-attack'), 'wb') as f:
                f.write(b'x')
            wrote.append(d)
        except OSError:
            pass
        try:
            os.mkdir(os.path.join(d, 'fusebench-attack-dir'))
            wrote.append(d + ' (mkdir)')
        except OSError:
            pass
    open('/tmp/work/ok', 'w').write('x')  # the work dir, /tmp and /dev/shm stay writable
    open('/tmp/ok', 'w').write('x')
    open('/dev/shm/ok', 'w').write('x')
    print(wrote)
    sys.exit(1 if wrote else 0)
    """
    result = run_py(code)
    assert result.status == "passed", result.stdout + result.stderr


def test_stdout_bomb_is_capped_and_fast(leaves_nothing):
    result = run_py("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 500_000)\n    "
                 "sys.stderr.write('y' * 100_000)\n", Limits(**{**SMALL.__dict__, "wall_s": 20}))
    assert result.status == "passed" and result.truncated
    assert len(result.stdout) == SMALL.output_bytes and len(result.stderr) == SMALL.output_bytes


# ---- things meant to outlive the run -----------------------------------------------------------------------------

def test_double_forked_daemons_die_with_the_run(leaves_nothing):
    code = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(120)
        os._exit(0)
    time.sleep(0.2)
    """
    assert run_py(code).status == "passed"
    c = run_c("#include <stdlib.h>\n#include <unistd.h>\n"
           "int main(void) { if (fork() == 0) { daemon(0, 0); sleep(120); } usleep(200000); return 0; }\n")
    assert c.status == "passed"


def test_sysv_shared_memory_does_not_outlive_the_run(leaves_nothing):
    code = """
    import ctypes, subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0, 4 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT|0600
    out = subprocess.run(['ipcmk', '-M', '1048576'], capture_output=True, text=True)
    print(shmid, out.stdout.strip(), out.returncode)
    """
    result = run_py(code)
    assert result.status == "passed" and int(result.stdout.split()[0]) >= 0, result.stdout + result.stderr
    c = run_c("#include <sys/shm.h>\n#include <string.h>\nint main(void) { int id = shmget(IPC_PRIVATE, 4 << 20, "
           "IPC_CREAT | 0600); char *p = shmat(id, 0, 0); memset(p, 1, 4 << 20); return id < 0; }\n")
    assert c.status == "passed", c.stdout + c.stderr


def test_private_tmp_cannot_be_unmounted(leaves_nothing):
    code = """
    import subprocess, sys
    tries = [['umount', '/tmp'], ['umount', '-l', '/tmp'], ['unshare', '-rm', 'umount', '/tmp'],
             ['mount', '-o', 'remount,rw', '/usr']]
    worked = [t for t in tries if subprocess.run(t, capture_output=True).returncode == 0]
    print(worked)
    sys.exit(1 if worked else 0)
    """
    result = run_py(code)
    assert result.status == "passed", result.stdout + result.stderr



# ---- the verdict: only the exit status of the program's own process tree, read outside the sandbox ---------------

# A completion for multipl_e_rows' Python `add` that tries to take a verdict channel from another process in the
# sandbox (issue 18): every fd of pid 1 through pidfd_open + pidfd_getfd (x86_64 numbers 434, 438) or reopened through
# /proc/1/fd; an eventfd (bwrap's init reports the exit status on one) gets "exit code 0" (+1) written to it. Then it
# returns the wrong sum, so the row's tests fail. Indented: MultiPL-E's stop tokens cut only at column 0.
_FORGE_BODY = """
    import ctypes, os, struct
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(ctypes.c_long(434), ctypes.c_long(1), ctypes.c_long(0))
    got = []
    for target in range(64):
        fd = libc.syscall(ctypes.c_long(438), ctypes.c_long(pidfd), ctypes.c_long(target), ctypes.c_long(0))
        if fd < 0:
            try:
                fd = os.open('/proc/1/fd/%d' % target, os.O_RDWR)
            except OSError:
                continue
        kind = os.readlink('/proc/self/fd/%d' % fd)
        got.append(kind)
        if 'eventfd' in kind:
            os.write(fd, struct.pack('Q', 1))
    print('pidfd', pidfd, 'took', got, flush=True)
    return x - y
"""


def test_a_program_cannot_forge_its_verdict_through_another_process(leaves_nothing):
    from fusebench.evaluate.multipl_e import multipl_e_prompt, process_multipl_e
    from multipl_e_rows import rows

    if resolve() != "bwrap":
        pytest.skip("the verdict channel attacked here is bwrap's (the attack suite expects bwrap, as CI has)")
    row = rows("py")[0]
    program = multipl_e_prompt(row) + _FORGE_BODY + "\n" + row["tests"]
    result = run_tests("py", program)
    assert result.status == "failed" and result.exit_code == 1, result
    assert "AssertionError" in result.stderr, result.stderr
    took = result.stdout.split("took", 1)[1]
    assert "eventfd" not in took and "pipe" not in took, result.stdout  # no fd of pid 1 was reachable at all
    assert process_multipl_e(row, [_FORGE_BODY]) == {"pass@1": 0.0}


def test_a_compiled_program_cannot_forge_its_verdict_either(leaves_nothing):
    # the same attack in C (raw syscalls, no interpreter between), the way a C++ completion would make it
    c = run_c("""
    #include <fcntl.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    int main(void) {
        int pidfd = syscall(SYS_pidfd_open, 1, 0), took = 0;
        for (int target = 0; target < 64; target++) {
            char path[64], kind[64] = "";
            int fd = pidfd >= 0 ? syscall(SYS_pidfd_getfd, pidfd, target, 0) : -1;
            if (fd < 0) {
                snprintf(path, sizeof path, "/proc/1/fd/%d", target);
                fd = open(path, O_RDWR);
            }
            if (fd < 0)
                continue;
            took++;
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            if (readlink(path, kind, sizeof kind - 1) > 0 && strstr(kind, "eventfd")) {
                uint64_t one = 1;
                write(fd, &one, sizeof one);
            }
        }
        printf("took %d\\n", took);
        return 1;  /* the tests failed */
    }
    """)
    assert c.status == "failed" and c.exit_code == 1 and "took 0" in c.stdout, c


def test_no_other_process_in_the_sandbox_can_be_read_or_written(leaves_nothing):
    # pid 1 holds no channel, and its memory, fds and environment are closed to the program (it is not dumpable):
    # /proc/<pid>/mem of a process is how one rewrites its code without ptrace
    code = """
    import os, sys
    opened = []
    for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
        for what, flags in (('mem', os.O_RDWR), ('fd', os.O_RDONLY), ('environ', os.O_RDONLY)):
            try:
                os.close(os.open('/proc/%s/%s' % (pid, what), flags))
                opened.append((pid, what))
            except OSError:
                pass
    print(opened)
    sys.exit(1 if opened else 0)
    """
    result = run_py(code)
    assert result.status == "passed", result.stdout + result.stderr

