"""What about the machine and libraries can change a number without changing the recipe or the code.

Measured on the tiny world (issue 14): with the same code, recipe and library versions, trained weights are
bit-identical across runs on one machine, and across transformers 5.23 / 5.24. They are *not* identical when
- torch's vectorised kernels differ (`torch.backends.cpu.get_cpu_capability()`: AVX2 vs AVX512 changes the first
  forward pass of every architecture; scalar "DEFAULT" kernels even change the random initialisation), or
- the thread count differs (the LayerNorm backward of GPT-NeoX and MPT reduces in a thread-dependent order; Llama's
  RMSNorm path does not).
Neither can be pinned without giving up speed on another machine, so every stage record (`.stage.json`) and every
evaluation manifest carries this record, and two runs that disagree can be told apart by it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

# Packages whose version can change a trained weight or a score.
PACKAGES = ("torch", "transformers", "tokenizers", "sentencepiece", "numpy", "safetensors", "accelerate",
            "datasets", "lm_eval", "mergekit", "fusebench")
# Environment variables that change kernels or thread counts.
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "CUBLAS_WORKSPACE_CONFIG",
            "CUDA_VISIBLE_DEVICES")
# CPU flags that decide which SIMD kernels torch, MKL and oneDNN run.
_SIMD_PREFIXES = ("avx", "fma", "f16c", "amx", "sse4", "asimd", "sve", "neon")


def environment() -> dict:
    """The machine and library facts that can change results (JSON-ready; cheap enough to call per stage)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libc": "-".join(platform.libc_ver()),
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count(), "simd_flags": _simd_flags(),
                "torch_capability": torch.backends.cpu.get_cpu_capability()},
        "torch_threads": torch.get_num_threads(),
        "cuda": {"version": torch.version.cuda, "device": torch.cuda.get_device_name(0)} if cuda else None,
        "packages": package_versions(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _simd_flags() -> list[str]:
    flags = (_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split()
    return sorted(f for f in flags if f.startswith(_SIMD_PREFIXES))
