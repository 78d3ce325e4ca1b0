"""Moved: the sandbox is its own package now, `fusebench.sandbox` (the security boundary). These names remain for
older imports."""

from __future__ import annotations

from fusebench.sandbox import SYSTEM_PATH, Limits, Result, SandboxError, resolve, run
from fusebench.sandbox.types import Status

ExecResult = Result

__all__ = ["SYSTEM_PATH", "ExecResult", "Limits", "Result", "SandboxError", "Status", "run_sandboxed",
           "sandbox_mode"]


def run_sandboxed(argv: list[str], files: dict[str, str | bytes], limits: Limits = Limits(),
                  env: dict[str, str] | None = None) -> Result:
    return run(argv, files=files, limits=limits, env=env)


def sandbox_mode() -> str:
    return resolve()
