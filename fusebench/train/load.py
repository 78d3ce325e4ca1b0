"""Loading the model a continual training starts from, without a full host copy on every process.

The loop trains fp32 master weights (fusebench.train.loop), so a 7B init is 28 GB in fp32. Loaded naively on every
process of an 8-GPU launch, that is 8 copies in host RAM before accelerate moves or shards them. Here:
- FSDP on GPUs with `fsdp_cpu_ram_efficient_loading: true` (configs/accelerate/fsdp.yaml): only rank 0 reads them;
  the other ranks build the model with its parameters on the meta device (buffers such as rotary frequencies are
  computed for real: FSDP does not broadcast them), and accelerate broadcasts rank 0's weights when it shards
  (`fsdp2_load_full_state_dict` reads rank 0's values alone). transformers 5 no longer does this itself;
- DDP / DeepSpeed on GPUs: every process needs the weights on its own GPU, so they are read from the (mmapped)
  safetensors straight onto that GPU (`device_map`), tensor by tensor: no host copy of the model at all;
- on CPU the weights live in host memory anyway: one fp32 copy per process, read once (no fp16 copy beside it).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("fusebench")


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("true", "1")


def placement(fsdp: bool | None = None) -> tuple[dict | str | None, str]:
    """(device_map for from_pretrained, or "meta"; what it means in words) for this process of this launch.

    `fsdp`: whether accelerate will shard the model with FSDP. By default: its config asks (ACCELERATE_USE_FSDP)
    and there are GPUs, as accelerate itself decides: on CPU it runs an FSDP config as DDP, where every rank needs
    real weights (the rehearsal's FSDP leg)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if fsdp is None:
        fsdp = _flag("ACCELERATE_USE_FSDP") and world > 1 and torch.cuda.is_available()
    if fsdp:
        if not _flag("FSDP_CPU_RAM_EFFICIENT_LOADING"):
            return None, "host memory on every process (FSDP without fsdp_cpu_ram_efficient_loading)"
        if rank == 0:
            return None, "host memory (FSDP: rank 0 reads the weights and broadcasts them when sharding)"
        return "meta", "the meta device (FSDP: rank 0's weights arrive when sharding)"
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
        return {"": device}, f"{device} directly (no host copy)"
    return None, "host memory (CPU)"


def load_init_model(location: str, trust_remote_code: bool, fsdp: bool | None = None):
    """The causal LM at `location` in fp32, placed as `placement(fsdp)` says."""
    from transformers import AutoConfig, AutoModelForCausalLM

    device_map, where = placement(fsdp)
    log.info("loading %s for training in fp32 onto %s", location, where)
    if device_map == "meta":
        from accelerate import init_empty_weights

        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
        with init_empty_weights(include_buffers=False):
            return AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    # fp32 master weights whatever the checkpoint's dtype (Llama-2 ships fp16); bf16 is autocast's job
    return AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, trust_remote_code=trust_remote_code,
                                                device_map=device_map)
