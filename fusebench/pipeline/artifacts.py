"""Typed views of the artifacts stages leave on disk; a stage reads its inputs through these, never by guessing paths.

| artifact  | directory holds                                                                  |
|-----------|----------------------------------------------------------------------------------|
| Corpus    | train.jsonl, test.jsonl ({"text": ...} per line), manifest.json (sources, sha256)  |
| Tokenizer | a Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json)        |
| Model     | a Hugging Face model directory (config.json, model.safetensors, tokenizer), or     |
|           | pointer.json naming a directory / hub id elsewhere (pretrained models aren't copied)|
| Chunks    | chunks.jsonl: the text of every training sequence, shared by all models           |
|           | (+ replies.jsonl for a chat corpus: each sequence's reply spans, which the loss counts)|
| Store     | a distribution store (meta.json + shard-*/ .npy files), see fusebench.extract      |
| VocabMap  | vocab_map.npz + vocab_map.json, see fusebench.align                               |
| Eval      | <run>/<model>/<suite>.json (lm-eval's output) + .manifest.json + .items.json.gz   |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fusebench.data.corpora import read_messages, read_split
from fusebench.jsonl import read_jsonl


@dataclass(frozen=True)
class Corpus:
    path: Path

    def split(self, name: str) -> list[str]:
        return read_split(self.path, name)

    def conversations(self, name: str) -> list[list[dict]] | None:
        """A chat corpus's conversations ({role, content} lists); None for a plain-text corpus."""
        return read_messages(self.path, name)


@dataclass(frozen=True)
class Model:
    path: Path

    @property
    def location(self) -> str:
        """What `from_pretrained` takes: the stage dir itself, or the directory / hub id a pointer names."""
        pointer = self.path / "pointer.json"
        return json.loads(pointer.read_text())["location"] if pointer.exists() else str(self.path)

    @property
    def trust_remote_code(self) -> bool:
        """Only a pretrained model whose recipe entry says so runs code from its repository."""
        # a pointer, a .bin model converted here, or a model trained here from one of those
        for record in ("pointer.json", "converted_from.json", "trained_from.json"):
            if (self.path / record).exists():
                return bool(json.loads((self.path / record).read_text()).get("trust_remote_code"))
        return False

    def tokenizer(self):
        from fusebench.models.tokenizers import load_tokenizer

        return load_tokenizer(self.location, trust_remote_code=self.trust_remote_code)


@dataclass(frozen=True)
class Tokenizer:
    path: Path

    def load(self):
        from fusebench.models.tokenizers import load_tokenizer

        return load_tokenizer(self.path)


@dataclass(frozen=True)
class Chunks:
    path: Path

    def texts(self) -> list[str]:
        return read_jsonl(self.path / "chunks.jsonl")

    def replies(self) -> list[dict] | None:
        """Chat chunks' `{"text", "replies": [[lo, hi], ...]}` (character spans of the assistant turns); None when
        the chunks are plain text (every token counts)."""
        path = self.path / "replies.jsonl"
        if not path.exists():
            return None
        return read_jsonl(path)


def write_chunks(out: Path, texts: list, replies: list[dict] | None = None) -> None:
    (out / "chunks.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts),
                                      encoding="utf-8")
    if replies is not None:
        (out / "replies.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replies),
                                           encoding="utf-8")
