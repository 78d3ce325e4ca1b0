"""Attacks on the sandbox through the evaluation's own entry point (`run_tests`) and `fusebench.sandbox.run`, in
Python and C. Each asserts the attack was contained AND that nothing was left behind on the host: processes of
the sandbox's uids, cgroups, mounts, SysV IPC objects, files. Small limits and short wall clocks keep the suite
fast. Needs root with namespaces (CI) for the full set; the non-root checks run as `nobody` through setpriv.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fusebench.evaluate.code_exec import run_tests
from fusebench.sandbox import ENV, UID_BASE, UID_COUNT, Limits, SandboxError, cgroups, run, uids_used
from fusebench.sandbox import unshare as unshare_engine
from fusebench.sandbox.mode import clear_cache, resolve

pytestmark = [pytest.mark.toolchains,
              pytest.mark.skipif(os.geteuid() != 0, reason="the attack suite runs as root (CI), like the issue")]

REPO = Path(__file__).resolve().parents[1]
SMALL = Limits(wall_s=4, cpu_s=3, processes=64, cgroup_total_bytes=256 << 20, data_bytes=512 << 20,
               disk_bytes=16 << 20, shm_bytes=4 << 20, file_bytes=64 << 20, output_bytes=4096)
HOST_DIRS = ["/var/lib/php/sessions", "/var/tmp", "/dev/shm", "/tmp", "/run/lock", os.environ.get("HOME", "/root"),
             "/etc", "/usr/local", str(REPO)]


# ---- what "nothing left behind" means ------------------------------------------------------------------------

def _sandbox_pids(uids: set[int] | None = None) -> set[int]:
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


def _our_cgroups(pid: int) -> list[Path]:
    return [d for parent, _ in cgroups.parents().values() for d in parent.glob(f"fusebench-{pid}-*")]


def _host_state() -> dict:
    shm = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {"shm": {line.split()[1] for line in shm},
            "sem": {line.split()[1] for line in Path("/proc/sysvipc/sem").read_text().splitlines()[1:]},
            "msg": {line.split()[1] for line in Path("/proc/sysvipc/msg").read_text().splitlines()[1:]},
            "mounts": Path("/proc/self/mountinfo").read_text(),
            "tmp_dirs": {p.name for p in Path("/tmp").glob("fusebench-sandbox-*")}}


@pytest.fixture()
def leaves_nothing():
    """Snapshot the host before the test; afterwards assert no process, cgroup, mount, IPC object or temp dir
    of a sandbox remains."""
    before = _host_state()
    yield
    deadline = time.monotonic() + 10  # killed processes are reaped asynchronously
    while _sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_pids() == set(), "sandbox processes outlived their run"
    assert _our_cgroups(os.getpid()) == []
    after = _host_state()
    assert after["shm"] <= before["shm"] and after["sem"] <= before["sem"] and after["msg"] <= before["msg"]
    assert after["mounts"] == before["mounts"]
    assert after["tmp_dirs"] <= before["tmp_dirs"]


def _py(code: str, limits: Limits = SMALL, **kw):
    return run(["python3", "main.py"], files={"main.py": textwrap.dedent(code)}, limits=limits, **kw)


def _c(code: str, limits: Limits = SMALL):
    limits = Limits(**{**limits.__dict__, "wall_s": max(limits.wall_s, 15), "cpu_s": max(limits.cpu_s, 10)})
    return run(["/bin/sh", "-c", "gcc -O0 -o m m.c && exec ./m"], files={"m.c": textwrap.dedent(code)},
               limits=limits)


# ---- reading what is not ours ----------------------------------------------------------------------------------

def test_etc_shadow_is_unreadable(leaves_nothing):
    result = run_tests("py", "import sys\ntry:\n    print(open('/etc/shadow').read()[:20])\nexcept OSError as e:\n"
                       "    print('denied', e)\n    sys.exit(0)\nsys.exit(1)\n")
    assert result.status == "passed" and "denied" in result.stdout, result.stdout + result.stderr
    c = _c('#include <stdio.h>\nint main(void) { FILE *f = fopen("/etc/shadow", "r"); '
           'if (!f) { puts("denied"); return 0; } printf("%c", fgetc(f)); return 1; }\n')
    assert c.status == "passed" and "denied" in c.stdout, c.stdout + c.stderr
    uid = _py("import os\nprint(os.getuid(), os.geteuid(), open('/proc/self/status').read())\n")
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
    c = _c(f'#include <stdlib.h>\n#include <string.h>\nextern char **environ;\nint main(void) {{\n'
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
        c = _c(f"""
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
    result = _py(code)
    assert result.status == "passed", result.stdout + result.stderr
    assert int(result.stdout.split()[0]) < SMALL.processes
    c = _c("#include <unistd.h>\nint main(void) { for (;;) fork(); }\n")
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
    result = _py(code, Limits(**{**SMALL.__dict__, "wall_s": 10, "cpus": 1.0}))
    assert result.status == "passed", result.stdout + result.stderr
    cpu, wall = map(float, result.stdout.split())
    assert cpu <= 1.0 * wall * 1.25 + 0.2, (cpu, wall)


def test_memory_bomb_is_stopped(leaves_nothing):
    result = _py("data = bytearray(10 * 2**30)\n")
    assert result.status == "failed" and "MemoryError" in result.stderr
    # touch 1 GiB in 32 MiB steps: over the 256 MiB cgroup (or the 512 MiB RLIMIT_DATA where no cgroup exists)
    c = _c("""
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
    result = _py(code)
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
        c = _c('#include <stdio.h>\nint main(void) {\n' + "".join(
            f'  {{ FILE *f = fopen("{t}.c", "w"); if (f) {{ fputs("x", f); fclose(f); }} }}\n' for t in targets)
            + "  return 0;\n}\n")
        assert c.status == "passed", c.stdout + c.stderr
        leaked = [t for t in targets for p in (t, t + ".c") if Path(p).exists()]
        assert leaked == [], f"written to the host: {leaked}"
    finally:
        for t in targets:
            for p in (t, t + ".c"):
                Path(p).unlink(missing_ok=True)


def test_stdout_bomb_is_capped_and_fast(leaves_nothing):
    result = _py("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 500_000)\n    "
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
    assert _py(code).status == "passed"
    c = _c("#include <stdlib.h>\n#include <unistd.h>\n"
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
    result = _py(code)
    assert result.status == "passed" and int(result.stdout.split()[0]) >= 0, result.stdout + result.stderr
    c = _c("#include <sys/shm.h>\n#include <string.h>\nint main(void) { int id = shmget(IPC_PRIVATE, 4 << 20, "
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
    result = _py(code)
    assert result.status == "passed", result.stdout + result.stderr


# ---- the sandbox's own status can't be forged or bypassed ---------------------------------------------------------

def test_unknown_mode_is_refused_and_runs_nothing(monkeypatch, leaves_nothing):
    marker = Path(f"/tmp/fusebench-attack-{uuid.uuid4().hex}")
    for typo in ("namespace", "Bwrap", "none", "userns"):
        monkeypatch.setenv(ENV, typo)
        with pytest.raises(SandboxError, match=f"{ENV}='{typo}' is not a sandbox mode"):
            run_tests("py", f"open({str(marker)!r}, 'w').write('ran')\n")
        assert not marker.exists()


def test_root_without_setpriv_refuses_the_fallback(monkeypatch):
    # setpriv cannot be uninstalled on a shared machine: its absence is simulated where the engine looks for it.
    monkeypatch.setattr(unshare_engine, "executables", lambda: ("/usr/bin/unshare", None))
    clear_cache()
    try:
        with pytest.raises(SandboxError, match="setpriv"):
            resolve("namespaces")
    finally:
        clear_cache()


def test_forged_setup_failure_is_judged_as_a_failing_program(leaves_nothing):
    from fusebench.evaluate.multipl_e import _pass_at_1
    forged = "import sys\nprint('sandbox setup failed: tmpfs on /tmp', file=sys.stderr)\nsys.exit(254)\n"
    result = run_tests("py", forged)
    assert (result.status, result.exit_code) == ("failed", 254)
    assert _pass_at_1("py", [forged, "print('ok')\n"]) == 0.5  # judged, not an aborted evaluation
    # try to forge bwrap's own exit report through the sandbox's init process's file descriptors
    code = """
    import os, struct, sys
    try:
        fds = os.listdir('/proc/1/fd')
    except OSError:  # the unshare engine's PID 1 is root's
        fds = []
    for fd in fds:
        try:
            f = os.open(f'/proc/1/fd/{fd}', os.O_WRONLY)
            os.write(f, struct.pack('Q', 1))
            os.write(f, b'{"exit-code": 0}\\n')
        except OSError:
            pass
    sys.exit(3)
    """
    result = _py(code)
    assert (result.status, result.exit_code) == ("failed", 3)


def test_a_real_setup_failure_is_the_sandboxs_error(monkeypatch, leaves_nothing):
    # the other direction of the out-of-band status: bwrap itself fails (a bind source that does not exist)
    from fusebench.sandbox import bwrap
    assert resolve("bwrap") == "bwrap"  # checked (and cached) with the real root filesystem first
    monkeypatch.setattr(bwrap, "_root_filesystem", lambda: ["--ro-bind", "/nonexistent-fusebench", "/usr"])
    result = run(["true"], limits=SMALL, mode="bwrap")
    assert (result.status, result.exit_code) == ("error", None) and "nonexistent-fusebench" in result.stderr


def test_sigterm_to_the_evaluator_leaves_nothing(tmp_path, leaves_nothing):
    script = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from fusebench.sandbox import run, Limits
    run(['/bin/sh', '-c', '(setsid sleep 120 &); sleep 120'], limits=Limits(wall_s=60))
    """)
    evaluator = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    inside: set[int] = set()
    while time.monotonic() < deadline and len(inside) < 4:  # bwrap, its init, sh and the setsid sleep
        inside = {p for p in _sandbox_pids(set(range(UID_BASE, UID_BASE + UID_COUNT))) if _in_cgroup_of(p, evaluator.pid)}
        time.sleep(0.05)
    uids = {_uid_of(p) for p in inside} - {None}
    assert uids, "the sandboxed program never started"
    evaluator.send_signal(signal.SIGTERM)
    assert evaluator.wait(timeout=20) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while _sandbox_pids(uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_pids(uids) == set()
    assert _our_cgroups(evaluator.pid) == []


def _in_cgroup_of(pid: int, evaluator: int) -> bool:
    try:
        return f"fusebench-{evaluator}-" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _uid_of(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None


# ---- non-root ---------------------------------------------------------------------------------------------------

def _as_nobody(code: str, *, userns: bool, mode: str | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a Python evaluator as uid 65534 (nobody), with or without the right to make namespaces."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **({ENV: mode} if mode else {})}
    wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if not userns:  # a real unprivileged process that may not create namespaces
        wrapper += ["bwrap", "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--dev", "/dev",
                    "--proc", "/proc", "--tmpfs", "/tmp", "--"]
    prelude = f"import sys, json\nsys.path.insert(0, {str(REPO)!r})\nfrom fusebench.sandbox import run, SandboxError\n"
    return subprocess.run([*wrapper, _python_for_nobody(), "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)


def _python_for_nobody() -> str:
    """The system interpreter (a venv under /root may be out of nobody's reach); the sandbox package needs only
    the standard library."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def test_non_root_without_namespaces_refuses_unless_the_weaker_mode_is_named():
    code = """
    try:
        r = run(['python3', '-c', 'print("ran")'])
        print(json.dumps([r.status, r.mode, r.stdout]))
    except SandboxError as e:
        print(json.dumps(['refused', str(e)]))
    """
    refused = json.loads(_as_nobody(code, userns=False).stdout.splitlines()[-1])
    assert refused[0] == "refused" and f"{ENV}=rlimits" in refused[1]
    named = _as_nobody(code, userns=False, mode="rlimits")
    assert json.loads(named.stdout.splitlines()[-1]) == ["passed", "rlimits", "ran\n"]
    assert "UNSANDBOXED" in named.stderr
    sandboxed = json.loads(_as_nobody(code, userns=True).stdout.splitlines()[-1])
    assert sandboxed == ["passed", "bwrap", "ran\n"]  # non-root with user namespaces: the full sandbox


@pytest.mark.parametrize("mode", ["rlimits", ""])
def test_unsandboxed_results_are_marked_in_the_manifest(mode):
    # in a fresh evaluator process: which modes ran is per process
    code = textwrap.dedent("""
    import json
    from fusebench.evaluate.manifest import code_sandbox_record
    from fusebench.sandbox import run
    before = code_sandbox_record()
    assert run(['true']).passed
    print(json.dumps([before, code_sandbox_record()]))
    """)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, ENV: mode}, capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    before, after = json.loads(out.stdout.splitlines()[-1])
    if mode == "rlimits":
        assert after == {"requested": "rlimits", "modes_used": ["rlimits"], "unsandboxed": True}
        assert "UNSANDBOXED" in out.stderr
    else:
        assert before["unsandboxed"] is False
        assert after == {"requested": "auto", "modes_used": ["bwrap"], "unsandboxed": False}
