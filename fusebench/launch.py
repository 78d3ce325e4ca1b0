"""How this process was launched, said once at start: dying with the launcher, and the launch mode in the log.

Workers die with their launcher. torch's elastic agent (which `accelerate launch` and torchrun run) starts every
worker with `start_new_session=True`, so a `kill -9 -- -PGID` of the launcher's group never reaches them and they
would train on as orphans (PPID 1), racing the requeued job for the same workdir. torch does this on purpose (it
kills each worker's own group on a clean shutdown), so the fix is on our side: a worker asks the kernel for SIGKILL
when its parent dies (PR_SET_PDEATHSIG). Stage outputs appear by atomic rename and locks are flock()s the kernel
drops, so a killed worker leaves a resumable `.partial/` behind, as any crash does.

A launch that asked for several processes but runs one (`accelerate launch --num_processes 2 --cpu …`, or
`--num_processes 2` alone on a machine without GPUs: accelerate then uses its single-process launcher) is not an
error, but it would quietly run N times slower than planned: the launcher's own command line says what was asked
for, and the run says so in its first lines.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fusebench")

_PR_SET_PDEATHSIG = 1


def _looks_like_launcher(pid: int) -> bool:
    """Whether `pid` runs a launcher (python, accelerate, torchrun, deepspeed) rather than an init or a reaper."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    name = Path(argv0).name
    return name.startswith("python") or name in ("accelerate", "torchrun", "deepspeed")


def die_with_launcher() -> None:
    """A worker of torch elastic (accelerate launch, torchrun): SIGKILL this process when the launcher dies, and
    exit at once if it already has. Plain runs (a nohup'ed `fusebench run`) are left alone."""
    if not ("LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ) or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("cannot ask to die with the launcher (prctl: %s)", os.strerror(ctypes.get_errno()))
        return
    # The launcher may have died between forking us and the prctl above: then the kernel already handed us to a
    # reaper (init, or a container's tini) and no signal will come. A launcher can itself be PID 1 in a container,
    # so PID 1 is only taken for a reaper when it does not run a launcher.
    if os.getppid() != launcher or (launcher == 1 and not _looks_like_launcher(1)):
        print("fusebench: the launcher that started this process has exited; stopping.", file=sys.stderr)
        os._exit(1)


@dataclass(frozen=True)
class Launch:
    mode: str               # "plain process", "accelerate launch", "torchrun"
    world: int
    rank: int
    backend: str            # the torch.distributed backend, or "none" for one process
    distributed_type: str   # accelerate's (DDP, FSDP, DEEPSPEED, ...) or "none"
    requested: int | None   # processes the launcher's command line asked for, when it says


def _launcher_argv() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def requested_processes(argv: list[str]) -> int | None:
    """`--num_processes N` (or `--nproc_per_node N` × nodes) on a launcher's command line, else its config's."""
    value, config = None, None
    for i, arg in enumerate(argv):
        name, _, inline = arg.partition("=")
        if name in ("--num_processes", "--num-processes", "--nproc_per_node", "--nproc-per-node"):
            value = inline or (argv[i + 1] if i + 1 < len(argv) else None)
        elif name in ("--config_file", "--config-file"):
            config = inline or (argv[i + 1] if i + 1 < len(argv) else None)
    if value is None and config:
        try:
            import yaml

            value = (yaml.safe_load(Path(config).read_text()) or {}).get("num_processes")
        except (OSError, ValueError, AttributeError):
            value = None
    if value is None and os.environ.get("ACCELERATE_NUM_PROCESSES"):
        value = os.environ["ACCELERATE_NUM_PROCESSES"]
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def describe() -> Launch:
    """The launch this process is part of. With WORLD_SIZE > 1 this joins the process group (as the runner would)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    accelerate = any(k.startswith("ACCELERATE_") for k in os.environ)
    mode = "accelerate launch" if accelerate else "torchrun" if "LOCAL_RANK" in os.environ else "plain process"
    backend, dtype = "none", "none"
    if world > 1:
        import torch
        from accelerate import PartialState

        from fusebench.pipeline.runner import collective_timeout

        # the same arguments as the runner's (a singleton: the runner gets this one back)
        state = PartialState(cpu=not torch.cuda.is_available(), timeout=collective_timeout())
        backend, dtype = str(state.backend), str(state.distributed_type).removeprefix("DistributedType.")
    for flag, name in (("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"), ("ACCELERATE_USE_FSDP", "FSDP")):
        if os.environ.get(flag, "").lower() == "true":
            dtype = name if world > 1 else f"{name} asked, none with one process"
    return Launch(mode, world, rank, backend, dtype, requested_processes(_launcher_argv()) if mode != "plain process"
                  else None)


def end_process_group() -> None:
    """Leave the launch's process group, on every rank, once the run's last collective is behind it. Left alive, gloo's
    worker threads can abort the interpreter's exit ("terminate called without an active exception", SIGABRT, exit
    -6): a rank that returned early while the main process published failed so once in a full CI run of the
    fusechat DDP rehearsal, after all its stages had finished (7 runs of that test alone passed). Not called on an
    error: a rank still waiting in a collective would hang."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def log_launch(launch: Launch) -> None:
    """One line with the world size, backend and launch mode; a warning when fewer processes run than were asked."""
    log.info("launch: %s, world size %d (this is rank %d), backend %s, distributed type %s", launch.mode,
             launch.world, launch.rank, launch.backend, launch.distributed_type)
    if launch.requested and launch.requested > launch.world:
        log.warning("WARNING: the launcher asked for %d processes but %d runs (world size %d). accelerate starts one "
                    "process when it finds no GPUs (`--num_processes N` alone) and always with `--cpu`; for N "
                    "processes on CPU pass `--multi_gpu --num_processes N` (gloo) or a config such as "
                    "configs/accelerate/ddp.yaml, without `--cpu`.", launch.requested, launch.world, launch.world)


DEEPSPEED_INSTALL = "bash install.sh --deepspeed"


def check_accelerate_config(path: str | Path) -> str:
    """Preflight of an accelerate config before a launch: the backend it names must import here. Returns its
    distributed type; a missing DeepSpeed is an error naming the file, the key and the install command."""
    import yaml

    from fusebench.errors import FusebenchError

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise FusebenchError(f"accelerate config {path} cannot be read ({err}). Give one of configs/accelerate/*.yaml "
                             "or a file written by `accelerate config`.") from None
    dtype = str(config.get("distributed_type", "NO")) if isinstance(config, dict) else "NO"
    if dtype == "DEEPSPEED":
        require_deepspeed(f"accelerate config {path} sets distributed_type: DEEPSPEED")
    return dtype


def require_deepspeed(why: str) -> None:
    from fusebench.errors import FusebenchError

    try:
        import deepspeed  # noqa: F401  (imported only when a config asks for it: heavy, optional)
    except ImportError as err:
        raise FusebenchError(f"{why}, but DeepSpeed cannot be imported here ({err}). It is an optional extra: "
                             f"install it with `{DEEPSPEED_INSTALL}` (CPU builds compile no ops ahead of time; on "
                             "GPU nodes `pip install -e \".[gpu]\"` also works), or launch with "
                             "configs/accelerate/ddp.yaml or fsdp.yaml instead.") from None


def preflight_backend() -> None:
    """Under a launch whose config asked for DeepSpeed, fail at start (exit 2) rather than at the first training."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        require_deepspeed("this launch uses DeepSpeed (ACCELERATE_USE_DEEPSPEED=true)")
