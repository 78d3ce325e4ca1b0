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

import functools
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
                             f"the Hugging Face cache (hf download {location}"
                             f"{' --revision ' + revision if revision else ''}; `fusebench plan` lists every such "
                             "item).") from None


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


# Hub models published with one and the same tokenizer, used only when a hub id's tokenizer files cannot be read
# (offline and not in the cache, or the hub unreachable): every other decision compares the tokenizers themselves.
TOKENIZER_FAMILIES = {
    **{f"meta-llama/Llama-2-{size}-hf": "llama-2" for size in ("7b", "13b", "70b", "7b-chat", "13b-chat", "70b-chat")},
    **{f"EleutherAI/pythia-{size}{dedup}": "gpt-neox-20b" for size in ("14m", "70m", "160m", "410m", "1b", "1.4b",
                                                                        "2.8b", "6.9b", "12b")
       for dedup in ("", "-deduped")},
}
# what a tokenizer's files may hold; small next to weights, so fetching them alone is cheap
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "vocab.txt", "*.tiktoken"]
# the parts of tokenizer.json that decide which ids a text becomes (not padding, truncation or decoding)
_TOKENIZING_PARTS = ("model", "normalizer", "pre_tokenizer", "post_processor", "added_tokens")
# the tokenizer_config.json keys that change the ids (which special tokens, and whether BOS/EOS are added)
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "add_bos_token", "add_eos_token", "add_prefix_space")


def cached_snapshot(location: str, revision: str | None = None, patterns: list[str] | None = None) -> Path | None:
    """The snapshot folder of a hub model at `revision` in the local cache, or None; never reaches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, revision=revision, allow_patterns=patterns or _PATTERNS,
                                      local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or not at that revision
        return None


def tokenizer_snapshot(location: str, revision: str | None = None) -> Path | None:
    """The local directory holding a hub id's tokenizer files at `revision`: from the cache, else (online) fetched
    alone (a few MB, never the weights); None when neither works."""
    from huggingface_hub import snapshot_download

    for local_only in (True, False):
        try:
            path = Path(snapshot_download(location, revision=revision, allow_patterns=TOKENIZER_FILES,
                                          local_files_only=local_only))
        except Exception:  # noqa: BLE001 - not cached / offline / unreachable all mean "cannot read it here"
            continue
        if any(path.glob("tokenizer*")) or (path / "vocab.json").is_file():
            return path
    return None


def tokenizer_fingerprint(d: Path) -> str | None:
    """See _fingerprint; remembered per directory and file times (a 150k-token tokenizer.json takes ~1 s to hash,
    and the graph asks once per teacher)."""
    stamps = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(Path(d).glob("*")) if f.is_file())
    return _fingerprint(str(d), stamps)


@functools.lru_cache(maxsize=64)
def _fingerprint(d: str, stamps: tuple) -> str | None:
    """A hash of what decides how a tokenizer directory turns text into ids: tokenizer.json's vocabulary and merges,
    normalizer, pre-tokenizer, post-processor and added tokens, with tokenizer_config.json's special tokens (else
    the SentencePiece model with the special-token map). Chat templates, maximum lengths, padding and names do not
    count, so two repositories publishing the same tokenizer under different ids compare equal."""
    import hashlib

    d = Path(d)
    config = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8")) \
        if (d / "tokenizer_config.json").is_file() else {}
    special = {k: config.get(k) for k in _SPECIAL_KEYS}
    if (d / "tokenizer.json").is_file():
        data = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        parts = {k: data.get(k) for k in _TOKENIZING_PARTS} | {"special": special}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    files = [d / n for n in ("tokenizer.model", "vocab.json", "merges.txt", "special_tokens_map.json")
             if (d / n).is_file()]
    if not files:
        return None
    h = hashlib.sha256(json.dumps(special, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def tokenizer_identity(location: str, revision: str | None = None) -> str | None:
    """What identifies a pretrained model's tokenizer, or None when unknown: the fingerprint of its tokenizer files
    (a local directory, or a hub id's files at `revision`, read from the cache or fetched alone), else, for a hub id
    whose files cannot be read, its family in TOKENIZER_FAMILIES. Equal identities tokenize every text identically;
    training checks that a same-tokenizer teacher's store holds exactly the target's tokens (fusebench.fuse.targets).
    `fusebench plan` lists hub ids missing from the cache (fusebench.pipeline.preflight), so a run starts with every
    tokenizer readable and the graph does not change after the downloads."""
    d = Path(location).expanduser()
    if not d.is_dir() and is_hub_id(location):
        d = tokenizer_snapshot(location, revision) or d
    if not d.is_dir():
        return f"family:{TOKENIZER_FAMILIES[location]}" if location in TOKENIZER_FAMILIES and not revision else None
    return tokenizer_fingerprint(d)
