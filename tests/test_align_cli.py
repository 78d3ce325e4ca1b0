"""`fusebench align`: both tokenizations, the path and its cost, as a table or one JSON object."""

from __future__ import annotations

import json

from fusebench.align import tokenize_for_alignment
from fusebench.align.dtw import dtw
from fusebench.cli import main
from fusebench.models.tokenizers import load_tokenizer

TEXT = "def load(path):\n    return json.loads(path.read_text())\n"


def run_json(capsys, *argv: str) -> dict:
    assert main(["align", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_align_json_prints_tokens_path_and_cost(capsys, unigram_tokenizer_dir, bpe_tokenizer_dir):
    out = run_json(capsys, "--source", str(unigram_tokenizer_dir), "--target", str(bpe_tokenizer_dir),
                   "--text", TEXT)
    assert set(out) == {"source_tokens", "target_tokens", "pairs", "cost", "transfer", "coverage", "precision"}
    source, target = load_tokenizer(unigram_tokenizer_dir), load_tokenizer(bpe_tokenizer_dir)
    assert out["source_tokens"] == source.tokenize(TEXT)  # spelled as the tokenizer spells them
    assert out["target_tokens"] == target.tokenize(TEXT)
    assert out["pairs"][0] == [0, 0]
    assert out["pairs"][-1] == [len(out["source_tokens"]) - 1, len(out["target_tokens"]) - 1]
    expected = dtw(tokenize_for_alignment(source, TEXT), tokenize_for_alignment(target, TEXT))
    assert out["pairs"] == expected.pairs.tolist() and out["cost"] == expected.cost


def test_align_reads_a_file_and_accepts_real_vocabulary_names(capsys, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("Hello world,\n the end", encoding="utf-8")
    out = run_json(capsys, "--source", "llama-2", "--target", "mpt", "--file", str(path), "--aligner", "offsets")
    assert out["source_tokens"] == ["▁Hello", "▁world", ",", "<0x0A>", "▁the", "▁end"]
    assert out["target_tokens"] == ["Hello", "Ġworld", ",", "Ċ", "Ġthe", "Ġend"]
    assert out["pairs"] == [[k, k] for k in range(6)] and out["cost"] == 1.0
    assert out["transfer"] == list(range(6)) and out["coverage"] == out["precision"] == 1.0


def test_align_table_shows_each_pair_and_the_total_cost(capsys, unigram_tokenizer_dir, bpe_tokenizer_dir):
    assert main(["align", "--source", str(unigram_tokenizer_dir), "--target", str(bpe_tokenizer_dir),
                 "--text", "import os"]) == 0
    out = capsys.readouterr().out
    target_tokens = load_tokenizer(bpe_tokenizer_dir).tokenize("import os")
    assert out.startswith("source (") and f"target ({len(target_tokens)} tokens)" in out
    assert all(repr(tok) in out for tok in target_tokens)
    assert "total cost" in out and "transfer: coverage" in out


def test_align_reports_bad_input_as_a_clear_error(capsys, tmp_path, bpe_tokenizer_dir):
    tok = str(bpe_tokenizer_dir)
    assert main(["align", "--source", tok, "--target", tok, "--file", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read the text to align" in capsys.readouterr().err
    assert main(["align", "--source", tok, "--target", tok, "--text", ""]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["align", "--source", tok, "--target", tok, "--text", "x", "--aligner", "needleman"]) == 2
    assert "valid names are: dtw, offsets, statistics" in capsys.readouterr().err
    assert main(["align", "--source", str(tmp_path / "no-tokenizer"), "--target", tok, "--text", "x"]) == 2
    assert "cannot load tokenizer" in capsys.readouterr().err
