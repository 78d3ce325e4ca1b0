"""Chat data for continual training: a conversation rendered with the tokenizer's chat template, loss on replies only.

FuseChat trains the pivot on conversations in the pivot's own template, with the loss only on assistant turns.
`encode_chat(tokenizer, messages)` renders `messages` (a list of `{"role", "content"}`) with the tokenizer's
`chat_template` and returns the token ids and labels: the ids inside assistant turns, -100 (`IGNORE_INDEX`, what
the CLM loss skips) everywhere else. An assistant turn is everything the template writes for it after the
generation prompt: the reply and the template's end-of-turn text (`<|im_end|>` and its newline in ChatML), so the
model learns where to stop.

Which characters belong to an assistant turn comes from the template itself, two ways:
- a template with `{% generation %}` blocks marks them, and transformers returns them
  (`apply_chat_template(..., return_assistant_tokens_mask=True)`);
- any other template (most released ones): render the conversation up to turn k with the generation prompt, and up
  to and including turn k; the characters between the two renderings are turn k's. That needs each rendering to
  be a prefix of the whole one, which is checked (a template that rewrites earlier turns, e.g. drops the reasoning
  of past replies, is refused by name rather than masked wrongly).
Characters become tokens through the fast tokenizer's offsets, so a token that merges across a turn boundary is
still assigned (to the turn it overlaps, as transformers' own mask does); the ids are those of the whole text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from fusebench.errors import FusebenchError

IGNORE_INDEX = -100
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class ChatExample:
    input_ids: np.ndarray  # [T] int64
    labels: np.ndarray     # [T] int64: the id inside assistant turns, IGNORE_INDEX elsewhere

    @property
    def assistant_mask(self) -> np.ndarray:
        return self.labels != IGNORE_INDEX


def check_messages(messages: Any, where: str = "conversation") -> list[dict[str, str]]:
    """The messages as plain dicts, or a FusebenchError naming what is wrong and where."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise FusebenchError(f"{where}: a conversation is a non-empty list of {{role, content}} messages; got "
                             f"{type(messages).__name__}.")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise FusebenchError(f"{where}[{i}]: each message needs a string `role` and a string `content`; got "
                                 f"{m!r:.120}.")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise FusebenchError(f"{where}: no message has role 'assistant', so the reply-only loss would train on "
                             "nothing; drop the conversation or add the reply.")
    return out


def encode_chat(tokenizer, messages: Any, max_len: int | None = None, chat_template: str | None = None,
                where: str = "conversation") -> ChatExample:
    """Token ids and reply-only labels of one conversation (see the module docstring)."""
    messages = check_messages(messages, where)
    template = chat_template or _template_of(tokenizer, where)
    _check_fast(tokenizer, where)
    if _GENERATION_TAG.search(template):
        ids, mask = _by_generation_tags(tokenizer, messages, template)
    else:
        full, spans = _reply_spans(tokenizer, messages, template, where)
        ids, mask = _tokens_in_spans(tokenizer, full, spans)
    ids, mask = ids[:max_len], mask[:max_len]
    return ChatExample(ids, np.where(mask, ids, IGNORE_INDEX).astype(np.int64))


def _template_of(tokenizer, where: str) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise FusebenchError(f"{where}: the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no "
                             "chat_template, so there is no conversation format to train in; use a pivot whose "
                             "tokenizer has one (a trained tokenizer takes `chat_template:` in the recipe).")
    return template


def _check_fast(tokenizer, where: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise FusebenchError(f"{where}: reply-only masking needs a fast tokenizer (character offsets); "
                             f"{type(tokenizer).__name__} is not one.")


def render_chat(tokenizer, messages: Any, where: str = "conversation") -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text in the tokenizer's template, and the character spans of its assistant turns: what a
    chat chunk stores, so every model (sources too, as in FuseChat) reads the pivot's rendering of it."""
    messages = check_messages(messages, where)
    template = _template_of(tokenizer, where)
    _check_fast(tokenizer, where)
    if not _GENERATION_TAG.search(template):
        return _reply_spans(tokenizer, messages, template, where)
    full = _render(tokenizer, messages, template, prompt=False)
    ids, mask = _by_generation_tags(tokenizer, messages, template)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != ids.tolist():
        raise FusebenchError(f"{where}: the chat template's tokens differ from the tokens of its rendered text, so "
                             "reply spans cannot be placed in the text; use a template without {% generation %}.")
    return full, [(int(lo), int(hi)) for (lo, hi), m in zip(enc["offset_mapping"], mask) if m]


def chat_chunks(tokenizer, conversations: list, seq_len: int) -> list[dict]:
    """One chunk per conversation (FuseChat does not pack): `{"text": rendering, "replies": [[lo, hi], ...]}`, the
    text cut where this tokenizer's token `seq_len` starts, so every model sees the same text; a conversation whose
    replies all lie beyond the cut is left out (it would train on nothing)."""
    out = []
    for n, messages in enumerate(conversations):
        text, spans = render_chat(tokenizer, messages, where=f"conversation {n}")
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        cut = offsets[seq_len][0] if len(offsets) > seq_len else len(text)
        kept = [[lo, min(hi, cut)] for lo, hi in spans if lo < cut]
        if kept:
            out.append({"text": text[:cut], "replies": kept})
    return out


def reply_masks(tokenizer, chunks: list[dict], max_len: int) -> list[np.ndarray]:
    """Per chunk, which of this tokenizer's tokens of the chunk's text lie in a reply (the positions whose prediction
    the loss counts), for the same tokens `tokenize_chunks` gives: the text without special tokens, cut at max_len."""
    return [_tokens_in_spans(tokenizer, c["text"], c["replies"])[1][:max_len] for c in chunks]


def _by_generation_tags(tokenizer, messages, template) -> tuple[np.ndarray, np.ndarray]:
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return np.asarray(out["input_ids"], dtype=np.int64), np.asarray(out["assistant_masks"], dtype=bool)


def _render(tokenizer, messages, template, prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=prompt)


def _reply_spans(tokenizer, messages, template, where) -> tuple[str, list[tuple[int, int]]]:
    full = _render(tokenizer, messages, template, prompt=False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _render(tokenizer, messages[:k], template, prompt=True)
        end = _render(tokenizer, messages[:k + 1], template, prompt=False)
        if not (full.startswith(start) and full.startswith(end) and end.startswith(start)):
            raise FusebenchError(f"{where}[{k}]: the chat template renders the conversation up to this reply "
                                 "differently from the start of the whole conversation (it rewrites earlier turns), "
                                 "so the reply's tokens cannot be told apart; add {% generation %} blocks to the "
                                 "template around assistant replies.")
        spans.append((len(start), len(end)))
    return full, spans


def _tokens_in_spans(tokenizer, full: str, spans) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(ids), dtype=bool)
    for lo, hi in spans:  # a token belongs to a reply when its characters overlap the reply's
        mask |= (offsets[:, 0] < hi) & (offsets[:, 1] > lo)
    return ids, mask

