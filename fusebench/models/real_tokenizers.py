"""Real pretrained tokenizers, offline: rebuilt from the llama.cpp vocab-only GGUFs shipped in a PyPI sdist.

The paper fuses Llama-2 (SentencePiece, `▁`) with MPT and OpenLLaMA; MPT uses the GPT-NeoX-20B byte-level BPE
(`Ġ`). The Hugging Face hub is not reachable here, but the `llama-cpp-python` sdist carries llama.cpp's tokenizer
test vocabularies (`vendor/llama.cpp/models/ggml-vocab-*.gguf`, MIT), each with the ids llama.cpp expects for a set
of test strings (`.gguf.inp` / `.gguf.out`). From those:

- `llama-spm` (Llama-2 / OpenLLaMA, 32000) and `gpt-2` load with transformers' GGUF support. For llama-spm the
  loader's Metaspace pre-tokenizer skips SentencePiece's dummy prefix when a text already starts with a space
  (" Hello" -> [▁Hello] instead of [▁, ▁Hello]); it is replaced by the "prepend ▁, spaces -> ▁" normalizer,
  which reproduces SentencePiece, and llama.cpp, exactly.
- `mpt` and `gpt-neox` (50432 = 50277 real tokens + padding rows) are not understood by transformers' GGUF loader,
  so they are rebuilt with the `tokenizers` library from the GGUF's token list, merges and token types, with the
  GPT-NeoX-20B pipeline (NFC, byte-level pre-tokenizer with GPT-2's split regex, runs of spaces as added tokens).

Each is converted once and saved as an ordinary HF tokenizer directory under the fusebench cache, so later loads
take milliseconds rather than the seconds a GGUF parse costs. `check_against_llama_cpp` compares a tokenizer with
llama.cpp's own expected ids; the tests run it.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fusebench.data.packages import Package, cache_root, fetch
from fusebench.errors import FusebenchError

LLAMA_CPP_VOCABS = Package("llama-cpp-python", "0.3.36", "pypi-sdist", "MIT", ("vendor/llama.cpp/models/ggml-vocab-",))

# name -> how to turn the GGUF into an HF tokenizer ("gguf": transformers reads it; "bpe": rebuilt here)
REAL_TOKENIZERS = {"llama-spm": "spm", "gpt-2": "gguf", "mpt": "bpe", "gpt-neox": "bpe"}
# friendlier names for the same vocabularies
ALIASES = {"llama-2": "llama-spm", "llama2": "llama-spm", "openllama": "llama-spm", "gpt-neox-20b": "gpt-neox"}


def gguf_path(name: str) -> Path:
    """The llama.cpp vocab-only GGUF for `name`, fetched from the sdist on first use."""
    return fetch(LLAMA_CPP_VOCABS) / "vendor" / "llama.cpp" / "models" / f"ggml-vocab-{name}.gguf"


def load_real_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A real tokenizer by llama.cpp vocab name (`llama-spm`, `mpt`, `gpt-neox`, `gpt-2`; alias `llama-2`)."""
    name = ALIASES.get(name, name)
    if name not in REAL_TOKENIZERS:
        raise FusebenchError(
            f"unknown real tokenizer {name!r}: the offline vocabularies are {', '.join(sorted(REAL_TOKENIZERS))} "
            f"(aliases: {', '.join(sorted(ALIASES))}). For any other tokenizer give a local directory or hub id."
        )
    out = cache_root() / "tokenizers" / f"{name}-{LLAMA_CPP_VOCABS.name}-{LLAMA_CPP_VOCABS.version}"
    marker = out / ".complete"
    if not marker.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if not marker.exists():
                tok = _rebuild_bpe(gguf_path(name)) if REAL_TOKENIZERS[name] == "bpe" else _convert_gguf(name)
                tok.save_pretrained(out)
                marker.write_text(f"converted from {gguf_path(name).name}\n")
    return AutoTokenizer.from_pretrained(str(out))


def _convert_gguf(name: str) -> PreTrainedTokenizerFast:
    path = gguf_path(name)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if REAL_TOKENIZERS[name] == "spm":
        from tokenizers import normalizers

        backend = tok.backend_tokenizer
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.pre_tokenizer = None
    return tok


def _rebuild_bpe(path: Path) -> PreTrainedTokenizerFast:
    """A GPT-NeoX-style byte-level BPE from a GGUF's tokens, merges and token types."""
    import gguf  # optional heavy-ish import, only needed for the one-time conversion
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    fields = gguf.GGUFReader(str(path)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()]
    # Every token keeps its GGUF id in the BPE vocab (added tokens then reuse those ids), so the tokenizer's
    # length equals the model's embedding rows (50432 for MPT) even though the padding rows are never produced.
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    # llama.cpp token types: 3 = control (<|endoftext|>, <|padding|>), 4 = user-defined. GPT-NeoX's user-defined
    # tokens are runs of 2..24 spaces matched in raw text before BPE; the rest are unused padding rows.
    added = []
    for t, kind in zip(tokens, types):
        if kind == 3 or (kind == 4 and t.strip()):
            added.append(AddedToken(t, special=True, normalized=False))
        elif kind == 4:
            added.append(AddedToken(t, special=False, normalized=True))
    tok.add_tokens(added)
    eot = tokens[int(fields["tokenizer.ggml.eos_token_id"].contents())]
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
                                   model_max_length=2048)


def llama_cpp_expectations(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's own test strings and the ids it expects for them (no BOS), for the vocabularies that ship them."""
    name = ALIASES.get(name, name)
    base = gguf_path(name)
    inp, out = Path(f"{base}.inp"), Path(f"{base}.out")
    if not inp.exists():
        return []
    texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    ids = [[int(x) for x in line.split()] for line in out.read_text(encoding="utf-8").split("\n")[: len(texts)]]
    return list(zip(texts, ids))


def check_against_llama_cpp(name: str, tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """The test strings on which `tokenizer` disagrees with llama.cpp (empty when it reproduces every one)."""
    return [text for text, want in llama_cpp_expectations(name)
            if tokenizer(text, add_special_tokens=False)["input_ids"] != want]
