"""Pretrained models named by a recipe: a local directory or a hub id (at a revision), resolved to a local directory.

Every later stage (extraction, training, evaluation, vocabulary maps, merges, ensembles) then loads the model from
that directory, so hub ids and revisions are handled once, here:
- a hub id is resolved through `huggingface_hub.snapshot_download` at the recipe's `revision` (default `main`);
  under `HF_HUB_OFFLINE=1` that reads the local Hugging Face cache and fails in words when the revision is missing;
- a model shipped only as pickled `pytorch_model*.bin` is converted once to safetensors into the model stage's own
  directory, reading each shard with `torch.load(weights_only=True)` (what transformers does: tensors only, no
  code runs), so nothing downstream ever unpickles;
- remote code (`*.py` in the repository) is fetched only when the recipe sets `trust_remote_code: true`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fusebench.errors import FusebenchError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".gguf")
_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.tiktoken"]


def is_hub_id(location: str) -> bool:
    """`owner/name` that is not an existing path."""
    return not Path(location).exists() and location.count("/") == 1 and not location.startswith((".", "/", "~"))


def resolve_pretrained(location: str, revision: str | None = None, trust_remote_code: bool = False) -> Path:
    """The local directory holding `location` (a directory, or a hub id at `revision`)."""
    if Path(location).expanduser().is_dir():
        if revision:
            raise FusebenchError(f"model {location!r} is a local directory, so `revision: {revision}` cannot apply; "
                                 "drop `revision` or give the hub id (ORG/NAME) instead.")
        return Path(location).expanduser().resolve()
    if not is_hub_id(location):
        raise FusebenchError(f"model {location!r} is neither an existing directory nor a hub id (ORG/NAME). "
                             "Fix `path:` in the recipe.")
    from huggingface_hub import snapshot_download

    patterns = _PATTERNS + (["*.py"] if trust_remote_code else [])
    try:
        return Path(snapshot_download(location, revision=revision, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 - hub errors come in many classes; all mean "not available"
        first = (str(err).splitlines() or [type(err).__name__])[0][:300]
        raise FusebenchError(f"cannot get model {location!r} at revision {revision or 'main'!r}: {first}. Check the "
                             "id and `revision:` in the recipe; offline (HF_HUB_OFFLINE=1) it must already be in "
                             "the Hugging Face cache (`hf download ID --revision REV`).") from None


def has_safetensors(model_dir: Path) -> bool:
    return any(Path(model_dir).glob("*.safetensors"))


def bin_shards(model_dir: Path) -> list[Path]:
    """The pickled weight files of a model directory, in index order when there is an index."""
    index = Path(model_dir) / "pytorch_model.bin.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [Path(model_dir) / n for n in names]
    return sorted(Path(model_dir).glob("*.bin"))


def convert_bin_to_safetensors(src: Path, out: Path) -> Path:
    """Copy `src`'s config and tokenizer files into `out` and write its `.bin` weights there as safetensors.

    Written here rather than as from_pretrained + save_pretrained: shard by shard keeps peak memory at one shard (a
    7B model's 14 GB is never held twice) and the tensors stay byte-identical, names and dtype included."""
    import torch
    from safetensors.torch import save_file

    shards = bin_shards(src)
    if not shards:
        raise FusebenchError(f"{src} holds neither *.safetensors nor pytorch_model*.bin weights; it is not a "
                             "Hugging Face model directory. Check `path:` / `revision:` in the recipe.")
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES) and f.name != "pytorch_model.bin.index.json":
            shutil.copy2(f, out / f.name)
    weight_map, total = {}, 0
    for n, shard in enumerate(shards, 1):
        try:  # weights_only: a pickle that would run code (or hold anything but tensors) is refused
            state = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - unpickling errors have many classes
            raise FusebenchError(f"{shard} is not a plain tensor checkpoint ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200]}); fusebench loads .bin weights only through "
                                 "weights-only unpickling. Use a revision with safetensors weights.") from None
        seen: set[int] = set()
        tensors = {}
        for key, t in state.items():
            ptr = t.untyped_storage().data_ptr()  # tied weights share storage; safetensors wants one owner each
            tensors[key] = t.contiguous() if ptr not in seen else t.clone().contiguous()
            seen.add(ptr)
        name = "model.safetensors" if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del state, tensors
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out


# Hub models published with one and the same tokenizer (identical tokenizer files at their main revisions). For hub
# ids the stage graph relies on this table alone, never on what happens to be downloaded, so the graph (and every
# stage key) is the same before and after a download; a wrong entry would be caught in training, which checks that a
# same-tokenizer teacher's store holds exactly the target's tokens (fusebench.fuse.targets).
TOKENIZER_FAMILIES = {
    **{f"meta-llama/Llama-2-{size}-hf": "llama-2" for size in ("7b", "13b", "70b", "7b-chat", "13b-chat", "70b-chat")},
    **{f"EleutherAI/pythia-{size}{dedup}": "gpt-neox-20b" for size in ("14m", "70m", "160m", "410m", "1b", "1.4b",
                                                                        "2.8b", "6.9b", "12b")
       for dedup in ("", "-deduped")},
}


def tokenizer_identity(location: str, revision: str | None = None) -> str | None:
    """What identifies a pretrained model's tokenizer, or None when unknown: for a local directory a hash of its
    tokenizer files (`tokenizer.json` as canonical JSON: normalizer, pre-tokenizer, vocabulary, merges, special
    tokens; else the SentencePiece `tokenizer.model` with the special-token map), for a hub id at its main revision
    its family in TOKENIZER_FAMILIES. Equal identities tokenize every text identically."""
    import hashlib

    d = Path(location).expanduser()
    if not d.is_dir():
        return f"family:{TOKENIZER_FAMILIES[location]}" if location in TOKENIZER_FAMILIES and not revision else None
    if (d / "tokenizer.json").is_file():
        canonical = json.dumps(json.loads((d / "tokenizer.json").read_text(encoding="utf-8")), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()
    files = [d / n for n in ("tokenizer.model", "special_tokens_map.json") if (d / n).is_file()]
    if not files:
        return None
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()
