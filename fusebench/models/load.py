"""Load any causal LM fusebench can score: a Hugging Face model directory, a hub id, or fusebench's own ensemble.

A fusebench ensemble is a model directory whose `config.json` says `"model_type": "fusebench_ensemble"`; its classes
live in `fusebench.ensemble`, which registers them with `AutoConfig` / `AutoModelForCausalLM` on import. That import
happens only for such a directory, so everything else loads without the ensemble code. Weights are read from
safetensors only (never pickles), and remote code runs only when the caller asks for it by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fusebench.errors import FusebenchError

ENSEMBLE_MODEL_TYPE = "fusebench_ensemble"


def model_type(path_or_id: str | Path) -> str | None:
    """The `model_type` in a local directory's config.json (None for hub ids or a directory without one)."""
    config = Path(path_or_id) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FusebenchError(f"{config} is not valid JSON ({err}); re-save the model with save_pretrained.") from None
    if not isinstance(data, dict):
        raise FusebenchError(f"{config} is not valid JSON for a model config: it holds a {type(data).__name__}, not "
                             "an object of keys; re-save the model with save_pretrained.")
    return data.get("model_type")


def _resolve_dtype(dtype, device: str):
    import torch

    if dtype is None:  # fp32 on CPU keeps scores comparable across machines; bf16 is the GPU norm
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise FusebenchError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto.")
        return getattr(torch, dtype)
    return dtype


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_source(path_or_id: str | Path) -> None:
    """Fail early, in words, on a path that does not exist, a directory whose config.json is not JSON, or a hub id
    requested while offline."""
    path = Path(path_or_id)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FusebenchError(f"{path} has no config.json, so it is not a Hugging Face model directory. "
                                 "Point to the directory save_pretrained wrote (config.json + *.safetensors).")
        if model_type(path) != ENSEMBLE_MODEL_TYPE and not any(path.glob("*.safetensors")):
            raise FusebenchError(f"{path} holds no *.safetensors weights; fusebench loads safetensors only (pickled "
                                 "*.bin files can run code). Re-save with model.save_pretrained(dir, "
                                 "safe_serialization=True).")
        return
    looks_local = str(path_or_id).startswith((".", "/", "~")) or path.suffix in (".json", ".safetensors")
    if looks_local or str(path_or_id).count("/") > 1:
        raise FusebenchError(f"model {str(path_or_id)!r} does not exist: it is neither an existing directory nor a "
                             "hub id (owner/name). Check the path.")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FusebenchError(f"model {path_or_id!r} is not a local directory and HF_HUB_OFFLINE=1 forbids the hub. "
                             "Download it once with network (`hf download ID`) or pass a local directory; "
                             "offline, fusebench.models.gguf.smollm2_dir() gives a real pretrained model.")


def _local(path_or_id: str | Path, revision: str | None, trust_remote_code: bool) -> str | Path:
    """A hub id resolved to its local snapshot at `revision` (fusebench.models.hub); a directory as it is."""
    from fusebench.models.hub import is_hub_id, resolve_pretrained

    return resolve_pretrained(str(path_or_id), revision, trust_remote_code) if is_hub_id(str(path_or_id)) else path_or_id


def load_causal_lm(path_or_id: str | Path, device: str | None = None, dtype=None, trust_remote_code: bool = False,
                   revision: str | None = None):
    """A causal LM in eval mode on `device` (default: cuda if available, else cpu).

    `dtype` is a torch dtype, a name ("float32", "bfloat16", "auto") or None (fp32 on CPU, bf16 on GPU). A hub id
    is read from its snapshot at `revision` (offline: the local Hugging Face cache).
    """
    from transformers import AutoModelForCausalLM

    path_or_id = _local(path_or_id, revision, trust_remote_code)
    check_source(path_or_id)
    if model_type(path_or_id) == ENSEMBLE_MODEL_TYPE:
        try:
            import fusebench.ensemble  # noqa: F401  (registers EnsembleForCausalLM with the Auto classes)
        except ImportError as err:
            raise FusebenchError(f"{path_or_id} is a fusebench ensemble but fusebench.ensemble cannot be imported "
                                 f"({err}); reinstall fusebench.") from err
    device = device or default_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=_resolve_dtype(dtype, device),
                                                     use_safetensors=model_type(path_or_id) != ENSEMBLE_MODEL_TYPE,
                                                     trust_remote_code=trust_remote_code)
    except FusebenchError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise FusebenchError(f"could not load the causal LM at {path_or_id}: {str(err).splitlines()[0]} "
                             "(it must be a transformers causal LM saved with save_pretrained; pass "
                             "trust_remote_code=True only for a model whose code you trust).") from err
    return model.to(device).eval()


def load_tokenizer(path_or_id: str | Path, trust_remote_code: bool = False, revision: str | None = None):
    """The tokenizer saved beside a model (an ensemble directory saves its shared tokenizer at its root)."""
    from transformers import AutoTokenizer

    path_or_id = _local(path_or_id, revision, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise FusebenchError(f"could not load a tokenizer from {path_or_id}: {str(err).splitlines()[0]}. Save the "
                             "tokenizer into the model directory (tokenizer.save_pretrained(dir)).") from err
