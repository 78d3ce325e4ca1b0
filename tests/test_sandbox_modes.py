"""The sandbox's own status and modes: forged and real setup failures, unknown modes, root without setpriv, a
SIGTERM or SIGKILL to the evaluator, non-root machines (as `nobody`, with and without user namespaces), and the
`unsandboxed` mark in eval manifests. Attacks by the program itself: tests/test_sandbox_attacks.py.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fusebench.evaluate.code_exec import run_tests
from fusebench.sandbox import ENV, SECCOMP_FILTERED, UID_BASE, UID_COUNT, SandboxError, cgroups, run
from fusebench.sandbox import unshare as unshare_engine
from fusebench.sandbox.mode import clear_cache, resolve
from sandbox_audit import (REPO, ROOT_ONLY, SMALL, in_cgroup_of, leaves_nothing, our_cgroups,  # noqa: F401
                           run_py, sandbox_pids, uid_of)

pytestmark = [pytest.mark.toolchains, ROOT_ONLY]
NEEDS_CGROUPS = pytest.mark.skipif(not cgroups.parents(), reason="finds the sandbox's processes by its cgroup")


def _engine_works(name: str) -> bool:
    try:
        return resolve(name) == name
    except SandboxError:
        return False


def test_unknown_mode_is_refused_and_runs_nothing(monkeypatch, leaves_nothing):
    marker = Path(f"/tmp/fusebench-attack-{uuid.uuid4().hex}")
    for typo in ("namespace", "Bwrap", "none", "userns"):
        monkeypatch.setenv(ENV, typo)
        with pytest.raises(SandboxError, match=f"{ENV}='{typo}' is not a sandbox mode"):
            run_tests("py", f"open({str(marker)!r}, 'w').write('ran')\n")
        assert not marker.exists()


def test_bwrap_without_libseccomp_refuses_to_run(monkeypatch):
    # libseccomp cannot be uninstalled on a shared machine: its absence is simulated where the filter loads it.
    # No engine runs without the filter (bwrap and the unshare fallback both load it): `auto` then refuses too.
    from fusebench.sandbox import seccomp
    monkeypatch.setattr(seccomp, "LIBRARY", "libseccomp-fusebench-missing.so.2")
    seccomp.program.cache_clear()
    clear_cache()
    try:
        with pytest.raises(SandboxError, match="seccomp filter cannot be built.*install libseccomp2"):
            resolve("bwrap")
        with pytest.raises(SandboxError, match="libseccomp"):
            run(["true"], limits=SMALL, mode="bwrap")
        with pytest.raises(SandboxError, match="libseccomp"):
            resolve("auto")
        if os.geteuid() == 0 and shutil.which("setpriv"):
            with pytest.raises(SandboxError, match="seccomp filter cannot be built"):
                resolve("namespaces")
    finally:
        seccomp.program.cache_clear()
        clear_cache()


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
    result = run_py(code)
    assert (result.status, result.exit_code) == ("failed", 3)


@pytest.mark.skipif(not _engine_works("bwrap"), reason="bubblewrap cannot run here")
def test_a_real_setup_failure_is_the_sandboxs_error(monkeypatch, leaves_nothing):
    # the other direction of the out-of-band status: bwrap itself fails (a bind source that does not exist)
    from fusebench.sandbox import bwrap
    assert resolve("bwrap") == "bwrap"  # checked (and cached) with the real root filesystem first
    monkeypatch.setattr(bwrap, "_root_filesystem", lambda: ["--ro-bind", "/nonexistent-fusebench", "/usr"])
    result = run(["true"], limits=SMALL, mode="bwrap")
    assert (result.status, result.exit_code) == ("error", None) and "nonexistent-fusebench" in result.stderr


def _evaluator_with_a_running_sandbox() -> tuple[subprocess.Popen, set[int]]:
    """A Python evaluator whose sandboxed program (and a setsid() escapee) sleeps; and the sandbox's uids."""
    script = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from fusebench.sandbox import run, Limits
    run(['/bin/sh', '-c', '(setsid sleep 120 &); sleep 120'], limits=Limits(wall_s=60))
    """)
    evaluator = subprocess.Popen([sys.executable, "-c", script])
    any_sandbox_uid = set(range(UID_BASE, UID_BASE + UID_COUNT))
    deadline = time.monotonic() + 20
    inside: set[int] = set()
    while time.monotonic() < deadline and len(sleepers := {p for p in inside if _comm(p) == "sleep"}) < 2:
        inside = {p for p in sandbox_pids(any_sandbox_uid) if in_cgroup_of(p, evaluator.pid)}
        time.sleep(0.05)
    assert len(sleepers) == 2, "the sandboxed program never started"
    return evaluator, {uid_of(p) for p in inside} - {None}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_gone(uids: set[int]) -> None:
    deadline = time.monotonic() + 10
    while sandbox_pids(uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_pids(uids) == set()


@NEEDS_CGROUPS
def test_sigterm_to_the_evaluator_leaves_nothing(leaves_nothing):
    evaluator, uids = _evaluator_with_a_running_sandbox()
    evaluator.send_signal(signal.SIGTERM)
    assert evaluator.wait(timeout=20) == -signal.SIGTERM  # cleaned up, then died of the signal as before
    _wait_gone(uids)
    assert our_cgroups(evaluator.pid) == []


@NEEDS_CGROUPS
def test_sigkill_to_the_evaluator_takes_the_sandbox_down_and_the_next_run_sweeps_its_cgroups(leaves_nothing):
    evaluator, uids = _evaluator_with_a_running_sandbox()
    evaluator.kill()  # no handler runs: bwrap --die-with-parent and PR_SET_PDEATHSIG must do it
    evaluator.wait(timeout=20)
    _wait_gone(uids)
    assert run_py("print(1)").passed  # the next run removes the dead evaluator's empty cgroups
    assert our_cgroups(evaluator.pid) == []


# ---- non-root ---------------------------------------------------------------------------------------------------

def _as_nobody(code: str, *, userns: bool, mode: str | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a Python evaluator as uid 65534 (nobody), with or without the right to make namespaces."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **({ENV: mode} if mode else {})}
    wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if not userns and _engine_works("bwrap"):  # a real unprivileged process that may not create namespaces
        wrapper += ["bwrap", "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--dev", "/dev",
                    "--proc", "/proc", "--tmpfs", "/tmp", "--"]
    prelude = (f"import sys, json\nsys.path.insert(0, {str(_package_for_nobody())!r})\n"
               "from fusebench.sandbox import run, SandboxError\n")
    return subprocess.run([*wrapper, _python_for_nobody(), "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)


@functools.cache
def _package_for_nobody() -> Path:
    """A copy of the sandbox package (standard library only) that an unprivileged user can import: the checkout may
    live under /tmp, which the wrapper above replaces with a private one, or under a home directory nobody cannot
    enter (CI clones into another folder)."""
    root = Path(tempfile.mkdtemp(prefix="fusebench-sbx-test-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(REPO / "fusebench" / "sandbox", root / "fusebench" / "sandbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "errors.py"):
        shutil.copy(REPO / "fusebench" / name, root / "fusebench" / name)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


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
    if _engine_works("bwrap"):  # user namespaces allowed: non-root gets the full sandbox
        sandboxed = json.loads(_as_nobody(code, userns=True).stdout.splitlines()[-1])
        assert sandboxed == ["passed", "bwrap", "ran\n"]
        # the old non-root mode let the program `umount /tmp` and see the host's /tmp
        umount = _as_nobody(code.replace("""['python3', '-c', 'print("ran")']""",
                                         """['/bin/sh', '-c', 'umount -l /tmp && echo unmounted; id -u']"""),
                            userns=True)
        status, mode, out = json.loads(umount.stdout.splitlines()[-1])
        assert mode == "bwrap" and "unmounted" not in out and out.split()[-1] == "65534"


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
        assert after == {"requested": "rlimits", "modes_used": ["rlimits"], "unsandboxed": True, "seccomp": False}
        assert "UNSANDBOXED" in out.stderr
    else:
        assert before["unsandboxed"] is False
        assert after == {"requested": "auto", "modes_used": [resolve("auto")], "unsandboxed": False,
                         "seccomp": resolve("auto") in SECCOMP_FILTERED}
