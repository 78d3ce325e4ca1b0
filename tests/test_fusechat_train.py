"""Training on conversations with the loss on replies only: chat chunks in the pivot's template, reply masks carried
to the loss (CLM and fusion terms), chat lines kept by a `files` corpus, and the `epochs` key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusebench.data.corpora import files_splits, read_messages, read_split, write_corpus
from fusebench.train.chat import chat_chunks, encode_chat, reply_masks
from fusebench.train.data import tokenize_chunks
from fusebench.train.loop import step_loss
from test_fusechat_chat import CONVERSATION, chatml  # noqa: F401 - the fixture: SmolLM2-Instruct's real ChatML

SHORT = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."}]


def test_chat_chunk_tokens_and_masks_are_encode_chats(chatml):  # noqa: F811
    chunks = chat_chunks(chatml, [CONVERSATION, SHORT], seq_len=512)
    ids = tokenize_chunks(chatml, [[c["text"]] for c in chunks], 512)
    masks = reply_masks(chatml, chunks, 512)
    for conv, got_ids, got_mask in zip([CONVERSATION, SHORT], ids, masks):
        ex = encode_chat(chatml, conv)
        np.testing.assert_array_equal(got_ids, ex.input_ids)
        np.testing.assert_array_equal(got_mask, ex.assistant_mask)
    # the spans are the replies with ChatML's end of turn, in characters of the rendered text
    text = chunks[1]["text"]
    assert [text[lo:hi] for lo, hi in chunks[1]["replies"]] == ["Seven.<|im_end|>\n"]


def test_chat_chunk_is_cut_at_seq_len_pivot_tokens_and_replyless_ones_dropped(chatml):  # noqa: F811
    full = encode_chat(chatml, CONVERSATION)
    first_reply = int(np.argmax(full.assistant_mask))
    cut = first_reply + 2  # inside the first reply
    (chunk,) = chat_chunks(chatml, [CONVERSATION], seq_len=cut)
    ids = tokenize_chunks(chatml, [[chunk["text"]]], 10_000)[0]
    np.testing.assert_array_equal(ids, full.input_ids[:cut])  # the text is exactly the first `cut` tokens
    np.testing.assert_array_equal(reply_masks(chatml, [chunk], 10_000)[0], full.assistant_mask[:cut])
    assert chat_chunks(chatml, [CONVERSATION], seq_len=first_reply) == []  # no reply token left: nothing to learn


def test_step_loss_counts_only_positions_predicting_reply_tokens():
    torch.manual_seed(0)
    B, T, V, K = 2, 7, 11, 3
    logits = torch.randn(B, T, V)
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0  # padding
    replies = torch.zeros(B, T, dtype=torch.long)
    replies[0, 3:6] = 1
    replies[1, 2:4] = 1
    t_ids = torch.randint(0, V, (B, T, K))
    t_lp = torch.log_softmax(torch.randn(B, T, K), -1)
    # independent computation: position t counts iff token t+1 is a reply token and both are real
    counted = [(b, t) for b in range(B) for t in range(T - 1) if mask[b, t] and mask[b, t + 1] and replies[b, t + 1]]
    logp = torch.log_softmax(logits, -1)
    clm = -sum(logp[b, t, ids[b, t + 1]] for b, t in counted) / len(counted)
    fus = -sum((t_lp[b, t].exp() * logp[b, t, t_ids[b, t]]).sum() for b, t in counted) / len(counted)
    loss, got_clm, got_fus = step_loss(logits, ids, mask, (t_ids, t_lp), 0.9, 1.0, float(len(counted)), replies)
    torch.testing.assert_close(got_clm, clm)
    torch.testing.assert_close(got_fus, fus)
    torch.testing.assert_close(loss, 0.9 * clm + 0.1 * fus)
    # and the prompt's predictions do not move the loss
    poked = logits.clone()
    poked[0, :2] += 5.0
    assert torch.allclose(step_loss(poked, ids, mask, (t_ids, t_lp), 0.9, 1.0, float(len(counted)), replies)[0], loss)


def test_files_corpus_keeps_conversations_and_plain_lines_unchanged(tmp_path):
    convs = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
             for i in range(60)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    train, test, prov = files_splits([str(tmp_path / "chat.jsonl")], 0, 10**6, 10**6)
    write_corpus(tmp_path / "c", train, test, prov)
    got = read_messages(tmp_path / "c", "train") + read_messages(tmp_path / "c", "test")
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, convs)) and read_messages(tmp_path / "c", "test")
    assert read_split(tmp_path / "c", "train")[0].startswith("User: Question")  # text stages read a plain rendering
    # a plain-text corpus writes exactly what it wrote before: {"text": ...} lines, and has no conversations
    write_corpus(tmp_path / "p", ["one doc", "two"], ["three"], {})
    assert (tmp_path / "p" / "train.jsonl").read_bytes() == b'{"text": "one doc"}\n{"text": "two"}\n'
    assert read_messages(tmp_path / "p", "train") is None


def test_epochs_sets_steps_and_is_left_out_of_keys_when_unset():
    from fusebench.pipeline.graph import build_stages
    from fusebench.pipeline.recipe import load_recipe

    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml")
    stage = next(s for s in build_stages(recipe) if s.id == "model:clm")
    assert "epochs" not in stage.config["train"]
    with pytest.raises(Exception, match="epochs"):
        load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml", ["models.clm.train.epochs=0"])


def test_hub_sharegpt_conversations_become_chat_lines():
    """FuseChat-Mixture's `conversations` ({from: human|gpt|system, value}) are kept as {role, content} messages."""
    from fusebench.data.corpora import _hub_doc

    doc = _hub_doc([{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi?"},
                    {"from": "gpt", "value": "Hello."}])
    assert doc["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                               {"role": "assistant", "content": "Hello."}]
    assert doc["text"] == "System: Be brief.\n\nUser: Hi?\n\nAssistant: Hello." and _hub_doc("plain") == "plain"
