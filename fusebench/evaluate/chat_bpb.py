"""Response bits per byte on a held-out chat split: the loglikelihood requests of the `chat` suite.

A chat model is asked to continue a conversation in its own format, so its assistant turns are scored given the
conversation rendered with its own chat template: for the i-th assistant message, the context is
`apply_chat_template(messages[:i], add_generation_prompt=True)` and the continuation is the message's content.
The rendered requests depend only on the template, so they are written once per (corpus, template) under the
workdir and named by both hashes; the task YAML (tasks/chat/) reads them as a json dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fusebench.data.chat import read_conversations
from fusebench.errors import FusebenchError
from fusebench.evaluate import offline_data as od


def chat_tokenizer(model: str | Path):
    """The model's tokenizer, which must carry a chat template (else one paragraph naming the fix)."""
    from fusebench.models.load import load_tokenizer

    tok = load_tokenizer(model)
    if not getattr(tok, "chat_template", None):
        raise FusebenchError(
            f"{model}: its tokenizer has no chat template, and the chat suites score a model in its own "
            "conversation format. Fix: evaluate a chat model (its tokenizer_config.json or chat_template.jinja "
            "holds `chat_template`), or add the template its training used to the model directory "
            "(tokenizer.chat_template = ...; tokenizer.save_pretrained(DIR)).")
    return tok


def turn_requests(tok, conversation: list[dict]) -> list[dict]:
    """One {"context", "response"} per assistant message of `conversation`."""
    out = []
    for i, message in enumerate(conversation):
        if message["role"] == "assistant":
            context = tok.apply_chat_template(conversation[:i], add_generation_prompt=True, tokenize=False)
            out.append({"context": context, "response": message["content"], "turn": i})
    return out


def write_requests(model: str | Path, corpus_dir: Path, data_dir: Path) -> od.DataFile:
    """Render the corpus's test conversations with the model's chat template, once per template."""
    tok = chat_tokenizer(model)
    test = Path(corpus_dir) / "test.jsonl"
    conversations = read_conversations(corpus_dir, "test")
    template_hash = hashlib.sha256(tok.chat_template.encode()).hexdigest()
    corpus_hash = hashlib.sha256(test.read_bytes()).hexdigest()
    path = data_dir / "chat_bpb" / f"{corpus_hash[:12]}-{template_hash[:12]}.jsonl"
    if not path.is_file():
        rows = [r for conv in conversations for r in turn_requests(tok, conv)]
        if not rows:
            raise FusebenchError(f"{test} holds no assistant turn to score.")
        od.write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return od.DataFile(path, f"chat corpus {test.resolve()} (sha256 {corpus_hash}) rendered with the chat template "
                             f"of {model} (sha256 {template_hash})", "test")
