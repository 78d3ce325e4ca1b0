"""The sandbox's seccomp filter (both engines): syscalls an untrusted test program never needs, refused with EPERM.

Everything is allowed except `BLOCKED` (debugging other processes or taking their fds, kernel keyrings, eBPF, perf,
userfaultfd, io_uring, loading kernels or modules, namespaces and mounts, file handles, accounting, swap, reboot,
the kernel log, quotas) and `BLOCKED_CALLS`, refused only for some arguments: the tty ioctls that push input into a
terminal (TIOCSTI), drive the console (TIOCLINUX) or set a line discipline (TIOCSETD), sockets of any family but IP
and netlink (unix sockets could reach a host socket bound under a mounted tree, AF_VSOCK the hypervisor's host;
datagram unix socketpairs can name an address too), and clone with CLONE_NEWUSER (other namespaces need capabilities
the program does not have); clone3, whose flags a filter cannot read, answers ENOSYS so callers fall back to clone.
A syscall through a non-native ABI (i386 `int $0x80`, x32) kills the process: a filter written for x86_64 numbers
would not see it.

The filter is compiled by libseccomp (the library systemd, Flatpak and container runtimes use), called through
ctypes: it is the kernel interface's own reference library, and neither PyPI nor Debian has a maintained binding
for this venv's Python. bwrap loads the compiled program (`--seccomp FD`) just before it execs the sandbox's PID 1
(`bwrap.LAUNCHER`), so everything in the sandbox runs under it; the unshare engine's `unshare.LOADER` loads it
after dropping to the sandbox uid, just before it execs the program.
"""

from __future__ import annotations

import ctypes
import functools
import os
import tempfile

LIBRARY = "libseccomp.so.2"
BLOCKED: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "unshare", "setns", "mount", "umount2",
    "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fspick", "fsconfig", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl",
    "lookup_dcookie",
    # another process's fds, memory advice or fd table: pidfd_getfd took bwrap's init's status eventfd (issue 18)
    "pidfd_open", "pidfd_getfd", "process_madvise", "process_mrelease", "kcmp")
TIOCSTI, TIOCLINUX, TIOCSETD = 0x5412, 0x541C, 0x5423
AF_UNIX, SOCK_DGRAM, SOCK_RAW, SOCK_TYPE_MASK = 1, 2, 3, 0xF
SOCKET_FAMILIES = (2, 10, 16)  # AF_INET, AF_INET6, AF_NETLINK: what socket() may make
AF_LIMIT = 64  # families are below this (AF_MAX is 46 in Linux 6.18); the kernel refuses larger ones itself
CLONE_NEWUSER = 0x10000000
# Calls refused only with these arguments: syscall, then (argument index, mask, value) tests that must all hold.
# Arguments the kernel reads as int are compared on their low 32 bits, or high bits would slip past.
BLOCKED_CALLS: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = (
    # tty ioctls that push input into a terminal, drive the console, or set a line discipline (on a pty from
    # /dev/ptmx: that loads rarely used kernel modules such as n_hdlc, the home of past privilege escalations)
    ("ioctl", ((1, 0xFFFFFFFF, TIOCSTI),)), ("ioctl", ((1, 0xFFFFFFFF, TIOCLINUX),)),
    ("ioctl", ((1, 0xFFFFFFFF, TIOCSETD),)),
    # socket families other than IP and netlink, which the sandbox's network namespace holds. Not covered by it:
    # unix sockets bound to a path under the host trees the sandbox binds (issue 18; a new AF_UNIX socket could
    # connect() or sendto() one) and AF_VSOCK (the hypervisor's host); the rest no test program needs.
    *(("socket", ((0, 0xFFFFFFFF, family),)) for family in range(AF_LIMIT) if family not in SOCKET_FAMILIES),
    # of socketpair's unix sockets (already connected), only a datagram one can still name another address in
    # sendto() (SOCK_RAW is a datagram socket in AF_UNIX). Stream and seqpacket pairs (subprocess plumbing) stay.
    ("socketpair", ((0, 0xFFFFFFFF, AF_UNIX), (1, SOCK_TYPE_MASK, SOCK_DGRAM))),
    ("socketpair", ((0, 0xFFFFFFFF, AF_UNIX), (1, SOCK_TYPE_MASK, SOCK_RAW))),
    # a new user namespace (root inside it: the kernel's widest attack surface). bwrap also refuses it
    # (--disable-userns); the unshare engine has only this filter.
    ("clone", ((0, CLONE_NEWUSER, CLONE_NEWUSER),)),
)
# clone3 passes its flags in memory, which a filter cannot read: "not implemented", so libcs and runtimes fall back
# to clone (glibc, Go, Rust and the JVM all do; container runtimes refuse it the same way)
NOT_IMPLEMENTED: tuple[str, ...] = ("clone3",)

# from <seccomp.h> (libseccomp 2.5)
_ACT_ALLOW, _ACT_KILL_PROCESS = 0x7FFF0000, 0x80000000
_ACT_ERRNO_EPERM, _ACT_ERRNO_ENOSYS = 0x00050000 | 1, 0x00050000 | 38
_FLTATR_ACT_BADARCH = 2
_CMP_MASKED_EQ = 7


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def problem() -> str | None:
    """None if the filter can be built here; otherwise why not (for the engine's availability check)."""
    try:
        program()
    except OSError as exc:
        return f"the seccomp filter cannot be built ({exc}); install libseccomp2"
    return None


@functools.lru_cache(maxsize=1)
def program() -> bytes:
    """The compiled classic-BPF filter, as bwrap's --seccomp reads it. Raises OSError when libseccomp is missing
    or refuses a rule (never a partial filter)."""
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        raise OSError(f"{LIBRARY} could not be loaded: {exc}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        _check(lib.seccomp_attr_set(ctx, _FLTATR_ACT_BADARCH, _ACT_KILL_PROCESS), "seccomp_attr_set(BADARCH)")
        for name in BLOCKED:
            _check(lib.seccomp_rule_add_array(ctx, _ACT_ERRNO_EPERM, _number(lib, name), 0, None), name)
        for name in NOT_IMPLEMENTED:
            _check(lib.seccomp_rule_add_array(ctx, _ACT_ERRNO_ENOSYS, _number(lib, name), 0, None), name)
        for name, tests in BLOCKED_CALLS:
            cmps = (_ArgCmp * len(tests))(*(_ArgCmp(arg, _CMP_MASKED_EQ, mask, value) for arg, mask, value in tests))
            _check(lib.seccomp_rule_add_array(ctx, _ACT_ERRNO_EPERM, _number(lib, name), len(tests), cmps),
                   f"{name} {tests}")
        with tempfile.TemporaryFile() as out:
            _check(lib.seccomp_export_bpf(ctx, out.fileno()), "seccomp_export_bpf")
            out.seek(0)
            data = out.read()
    finally:
        lib.seccomp_release(ctx)
    if not data or len(data) % 8:  # struct sock_filter is 8 bytes
        raise OSError(f"libseccomp exported a malformed filter ({len(data)} bytes)")
    return data


def syscall_number(name: str) -> int:
    """`name`'s syscall number on this machine's native architecture (what the sandbox's launcher calls)."""
    lib = ctypes.CDLL(LIBRARY, use_errno=True)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return _number(lib, name)


def _number(lib: ctypes.CDLL, name: str) -> int:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        raise OSError(f"libseccomp does not know the syscall {name!r} (too old a libseccomp?)")
    return nr


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise OSError(-rc, f"libseccomp refused {what}: {os.strerror(-rc)}")
