"""The security boundary: run untrusted (model-written) programs so they cannot touch the host.

    from fusebench.sandbox import run, Limits
    result = run(["python3", "main.py"], files={"main.py": code}, limits=Limits(wall_s=5))
    result.status  # "passed" | "failed" | "timeout" | "killed" | "error" (the sandbox itself failed)

Engines (`mode.py`): bubblewrap (`bwrap.py`, preferred), the unshare fallback (`unshare.py`, root only) and the
weaker `rlimits` mode that runs only when named and marks its results `unsandboxed`. Unknown modes, root without
`setpriv` for the fallback, or no isolation at all raise `SandboxError` (exit 2) instead of running the code.
Both engines run the program under a seccomp filter (`seccomp.py`: ptrace, pidfd_getfd, keyctl, bpf, io_uring,
mount, unix sockets... refused with EPERM). Per-run cgroups (`cgroups.py`) cap memory, processes and CPU of the
whole tree; `supervise.py` holds `run`, which starts the engine and judges how the run ended.
"""

from fusebench.sandbox.mode import ENV, requested, resolve
from fusebench.sandbox.supervise import UID_BASE, UID_COUNT, modes_used, run, uids_used
from fusebench.sandbox.types import (MODES, SECCOMP_FILTERED, SYSTEM_PATH, UNSANDBOXED, WORK_DIR, Limits, Result,
                                     SandboxError, Status)

__all__ = ["ENV", "MODES", "SECCOMP_FILTERED", "SYSTEM_PATH", "UID_BASE", "UID_COUNT", "UNSANDBOXED", "WORK_DIR",
           "Limits", "Result", "SandboxError", "Status", "modes_used", "requested", "resolve", "run", "uids_used"]
