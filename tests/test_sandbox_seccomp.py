"""The seccomp filter (fusebench/sandbox/seccomp.py) under attack: syscalls an untrusted test program never needs
are refused (ptrace, keyctl, bpf, io_uring, unshare/setns, mounts, TIOCSTI, and every way to reach another
process's fds or memory: pidfd_open/pidfd_getfd, kcmp, process_madvise...), non-native ABIs kill the process, and a
program that tried them is still judged by its own exit status. Each asserts nothing was left behind on the host
(`sandbox_audit.leaves_nothing`). Split out of tests/test_sandbox_attacks.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fusebench.evaluate.code_exec import run_tests
from fusebench.sandbox import Limits, run
from sandbox_audit import ROOT_ONLY, SMALL, leaves_nothing, run_c  # noqa: F401 (fixture)

pytestmark = [pytest.mark.toolchains, ROOT_ONLY]


# ---- kernel attack surface: the seccomp filter (fusebench/sandbox/seccomp.py) ------------------------------------

# x86_64 numbers of syscalls an untrusted test program never needs, each tried with harmless arguments
_REFUSED_SYSCALLS = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
tries = {
    'ptrace(PTRACE_TRACEME)': (101, 0, 0, 0, 0), 'keyctl(GET_KEYRING_ID)': (250, 0, -3, 0, 0),
    'add_key': (248, b'user', b'k', b'v', 1, -3), 'request_key': (249, b'user', b'k', 0, 0),
    'bpf(MAP_CREATE)': (321, 0, 0, 0), 'io_uring_setup': (425, 4, ctypes.create_string_buffer(120)),
    'perf_event_open': (298, ctypes.create_string_buffer(128), 0, -1, -1, 0), 'userfaultfd': (323, 0),
    'process_vm_readv': (310, os.getppid(), 0, 0, 0, 0, 0), 'unshare(CLONE_NEWNS)': (272, 0x00020000),
    'unshare(CLONE_NEWUSER)': (272, 0x10000000), 'setns': (308, os.open('/proc/self/ns/net', os.O_RDONLY), 0),
    'mount': (165, b'none', b'/tmp', b'tmpfs', 0, 0), 'open_tree': (428, -100, b'/tmp', 1),
    'fsopen': (430, b'tmpfs', 0), 'kexec_load': (246, 0, 0, 0, 0), 'init_module': (175, 0, 0, b''),
    'ioctl(TIOCSTI)': (16, 0, 0x5412, ctypes.byref(ctypes.c_char(b'x'))),
    'ioctl(TIOCSTI | high bits)': (16, 0, 0x1_0000_5412, ctypes.byref(ctypes.c_char(b'x'))),
    'ioctl(TIOCLINUX)': (16, 0, 0x541C, ctypes.byref(ctypes.c_char(b'\\x0b'))),
    'ioctl(TIOCSETD, N_HDLC)': (16, 0, 0x5423, ctypes.byref(ctypes.c_int(13))),
    'pidfd_open(1)': (434, 1, 0), 'pidfd_getfd': (438, 0, 0, 0),
    'kcmp(KCMP_FILE)': (312, os.getpid(), os.getpid(), 0, 0, 0),
    'process_madvise': (440, 0, 0, 0, 0, 0), 'process_mrelease': (448, 0, 0),
}
seen = {}
for name, (nr, *args) in tries.items():
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    seen[name] = 'ok' if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())
status = open('/proc/self/status').read()
seen['seccomp'] = next(line.split()[1] for line in status.splitlines() if line.startswith('Seccomp:'))
print(seen)
not_refused = {k: v for k, v in seen.items() if k != 'seccomp' and v != 'EPERM'}
print('NOT REFUSED', not_refused) if not_refused else None
"""


def test_kernel_attack_surface_syscalls_are_refused_and_the_program_is_judged_normally(leaves_nothing):
    # the program tries each syscall, then "passes its tests" (exit 0) or fails them (exit 1): scored like any other
    for verdict, code in (("passed", 0), ("failed", 1)):
        result = run_tests("py", _REFUSED_SYSCALLS + f"assert seen['seccomp'] == '2', seen\nsys.exit({code})\n")
        assert "NOT REFUSED" not in result.stdout, result.stdout + result.stderr
        assert result.status == verdict and result.exit_code == code, result.stdout + result.stderr


def test_ptrace_of_a_sibling_is_refused_in_c(leaves_nothing):
    c = run_c("""
    #include <errno.h>
    #include <signal.h>
    #include <stdio.h>
    #include <sys/ptrace.h>
    #include <unistd.h>
    int main(void) {
        pid_t child = fork();
        if (child == 0) { pause(); _exit(0); }
        long attach = ptrace(PTRACE_ATTACH, child, 0, 0);
        int attach_errno = errno;
        errno = 0;
        long me = ptrace(PTRACE_TRACEME, 0, 0, 0);
        printf("attach %ld %d traceme %ld %d\\n", attach, attach_errno, me, errno);
        kill(child, SIGKILL);
        return !(attach == -1 && attach_errno == EPERM && me == -1 && errno == EPERM);
    }
    """)
    assert c.status == "passed", c.stdout + c.stderr


def _i386_syscalls_reach_this_kernel(source: str, tmp_path: Path) -> bool:
    """The same program compiled and run on the host, unfiltered: does `int $0x80` return at all here?"""
    import subprocess

    (tmp_path / "m.c").write_text(source)
    subprocess.run(["gcc", "-O0", "-o", str(tmp_path / "m"), str(tmp_path / "m.c")], check=True)
    return "returned" in subprocess.run([str(tmp_path / "m")], capture_output=True, text=True).stdout


@pytest.mark.parametrize("abi", ["i386 int 0x80", "x32"])
def test_non_native_syscall_abis_are_killed(abi, leaves_nothing, tmp_path):
    # getpid through the i386 entry point (int $0x80, nr 20) or the x32 one (bit 30 set on x86_64's nr 39): such
    # calls would get past a filter written for x86_64 numbers, so the filter kills the process instead (SIGSYS)
    call = ('long r; __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20L) : "memory");' if abi.startswith("i386")
            else 'long r = syscall(0x40000000L | 39);')
    source = ('#include <stdio.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n'
              f'int main(void) {{ {call} printf("returned %ld\\n", r); fflush(stdout); return 0; }}\n')
    if abi.startswith("i386") and not _i386_syscalls_reach_this_kernel(source, tmp_path):
        pytest.skip("this kernel has no i386 syscall emulation (int $0x80 faults before any filter sees it)")
    c = run_c(source)
    assert c.status == "failed" and c.exit_code == 128 + 31, c  # SIGSYS: killed by the filter, judged a failure
    assert "returned" not in c.stdout


@pytest.mark.skipif(shutil.which("node") is None, reason="node (a MultiPL-E toolchain) is not installed")
def test_node_falls_back_when_io_uring_is_refused(leaves_nothing):
    # libuv uses io_uring when asked (and, in some versions, by default); refused, it must fall back to threads
    code = ("const fs = require('fs'); fs.writeFileSync('a', 'x'.repeat(100000));"
            "fs.readFile('a', (e, d) => { fs.stat('a', (e2, s) => console.log(e, d.length, e2, s.size)); });")
    result = run(["node", "-e", code], env={"UV_USE_IO_URING": "1"}, limits=Limits(**{**SMALL.__dict__, "wall_s": 20}))
    assert result.status == "passed" and result.stdout.split() == ["null", "100000", "null", "100000"], result
