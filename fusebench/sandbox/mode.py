"""Which engine runs untrusted code here. Fails closed: anything but a working sandbox is an error unless the user
named the weaker mode.

`FUSEBENCH_SANDBOX_MODE`:
* unset, empty or ``auto``: ``bwrap`` if bubblewrap works here, else ``namespaces`` (the unshare fallback, root
  only, needs `setpriv`), else a `SandboxError` that says how to fix it.
* ``bwrap`` / ``namespaces``: that engine, or a `SandboxError` saying why it cannot run.
* ``rlimits``: the weaker mode — only resource limits, a uid switch when root, a clean environment. The program
  can reach the network and write wherever its uid may; every result made this way is marked `unsandboxed`.
* anything else: a `SandboxError` (a typo must never weaken the sandbox).
"""

from __future__ import annotations

import functools
import os
import subprocess

from fusebench.sandbox import bwrap, seccomp, unshare
from fusebench.sandbox.types import MODES, SandboxError

ENV = "FUSEBENCH_SANDBOX_MODE"
_FIX = ("Fix: `apt-get install bubblewrap` (or run .ci/setup-toolchains.sh) and run where user namespaces are "
        "allowed (sysctl user.max_user_namespaces > 0) or as root; or, accepting that generated code then runs "
        f"UNSANDBOXED (it can reach the network and write wherever its user may; results are marked "
        f"`unsandboxed`), set {ENV}=rlimits.")


def requested() -> str:
    return os.environ.get(ENV, "").strip() or "auto"


def resolve(name: str | None = None) -> str:
    """The engine for `name` (default: the environment's choice), checked to work here; cached per name."""
    return _resolve(name or requested())


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> str:
    if name not in (*MODES, "auto"):
        raise SandboxError(f"{ENV}={name!r} is not a sandbox mode. Use one of: auto (default), "
                           f"{', '.join(MODES)}. Unknown values are refused so a typo can never weaken the sandbox.")
    if name == "rlimits":
        return name
    problems = []
    if name in ("auto", "bwrap"):
        why = _bwrap_problem()
        if why is None:
            return "bwrap"
        problems.append(why)
    if name in ("auto", "namespaces"):
        why = _unshare_problem()
        if why is None:
            return "namespaces"
        problems.append(why)
    raise SandboxError(f"cannot run untrusted code in a sandbox here ({'; '.join(problems)}), so fusebench "
                       f"refuses to run it. {_FIX}")


def _bwrap_problem() -> str | None:
    if bwrap.executable() is None:
        return "bubblewrap (`bwrap`) is not installed"
    if (why := seccomp.problem() or _perl_problem()) is not None:  # never bwrap without its filter
        return why
    from fusebench.sandbox.supervise import probe  # the real engine on a trivial program
    detail = probe("bwrap")
    return None if detail is None else f"bubblewrap does not work here: {detail}"


def _unshare_problem() -> str | None:
    unshare_exe, setpriv_exe = unshare.executables()
    if os.geteuid() != 0:
        return "the unshare fallback needs root"
    if unshare_exe is None:
        return "`unshare` (util-linux) is not installed"
    if setpriv_exe is None:
        return "`setpriv` (util-linux) is not installed, so the unshare fallback cannot drop root"
    if (why := seccomp.problem() or _perl_problem()) is not None:  # never without the filter
        return why
    try:
        ok = subprocess.run([unshare_exe, "--mount", "--net", "--pid", "--ipc", "--fork", "--kill-child",
                             "--mount-proc", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        return "`unshare` cannot create namespaces here"
    from fusebench.sandbox.supervise import probe
    detail = probe("namespaces")
    return None if detail is None else f"the unshare fallback does not work here: {detail}"


def _perl_problem() -> str | None:
    # both engines start the program through a few lines of perl (bwrap.LAUNCHER, unshare.LOADER)
    if not os.access(bwrap.PERL, os.X_OK):
        return f"{bwrap.PERL} (Debian's perl-base) is missing: the sandbox's launcher runs on it"
    return None


def clear_cache() -> None:
    _resolve.cache_clear()
