"""JSON Lines written with ensure_ascii=False keep U+2028, U+0085 and \\x1c-\\x1e raw inside strings; reading them back
line by line must split at "\\n" only (str.splitlines also splits there). A real tiny-world document with such a
character stopped `fusebench run recipes/tiny.yaml` at its general_more chunks (JSONDecodeError)."""

from __future__ import annotations

from fusebench.data.corpora import read_messages, read_split, write_corpus
from fusebench.pipeline.artifacts import Chunks, write_chunks

ODD = ["a line\u2028separator", "next\x85line", "file\x1cgroup\x1drecord\x1eunit", "form\x0cfeed\x0bvtab"]


def test_corpus_splits_read_back_every_document_whole(tmp_path):
    write_corpus(tmp_path / "c", ODD, ODD[::-1], {"sources": []})
    assert read_split(tmp_path / "c", "train") == ODD
    assert read_split(tmp_path / "c", "test") == ODD[::-1]


def test_conversations_and_chunks_read_back_whole(tmp_path):
    convs = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}], "text": q}
             for q in ODD]
    write_corpus(tmp_path / "c", convs, convs, {"sources": []})
    assert read_messages(tmp_path / "c", "train") == [c["messages"] for c in convs]
    (tmp_path / "k").mkdir()
    write_chunks(tmp_path / "k", ODD, [{"text": t, "replies": [[0, 1]]} for t in ODD])
    assert Chunks(tmp_path / "k").texts() == ODD
    assert [r["text"] for r in Chunks(tmp_path / "k").replies()] == ODD
