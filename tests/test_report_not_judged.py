"""A chat_judge score that is a word ("not judged", "no parseable rating") is shown as that word in the run
tables, never as a number: no Δ, no bold, no average."""

from __future__ import annotations

import csv
import html
from pathlib import Path

from fusebench.cli import main as fusebench_main
from fusebench.evaluate.chat_judge import NO_RATING, NOT_JUDGED, summarise
from fusebench.report.store import Evaluation, ResultsStore


def _judged(scores: list[float | None], judged: bool = True) -> dict:
    """chat_judge's results for two benchmarks, written by its own `summarise` from per-turn records."""
    results: dict = {"results": {}, "higher_is_better": {}, "n-samples": {}}
    for bench in ("gsm8k", "mbpp"):
        records = [{"score": s} for s in scores]
        for key, value in summarise(records, bench, judged).items():
            results[key].update(value)
    return results


def _run(root: Path) -> Path:
    store = ResultsStore(root / "results")
    store.add_run("judge-run", [
        Evaluation("pivot", "chat_judge", _judged([6.0, 8.0, 7.0])),
        Evaluation("fused", "chat_judge", _judged([None, None, None], judged=False)),
        Evaluation("garbled", "chat_judge", _judged([None, None, None])),
    ], roles={"target": "pivot", "fused": "fused", "baseline": "garbled"})
    out = root / "out"
    assert fusebench_main(["report", "--results", str(root / "results"), "--out", str(out),
                           "--format", "md,latex,html,csv"]) == 0
    return out


def test_word_scores_show_as_words_in_every_format_and_never_as_numbers(tmp_path):
    out = _run(tmp_path)
    md = (out / "run_judge_run_chat_judge.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    header = rows.pop("Task")
    assert header == ["pivot", "garbled", "fused"]
    assert set(rows) == {"gsm8k", "mbpp"}               # no average: two models have no number to average
    for task in ("gsm8k", "mbpp"):
        cells = dict(zip(header, rows[task]))
        assert cells["fused"] == NOT_JUDGED and cells["garbled"] == NO_RATING
        assert cells["pivot"].startswith("7.0000 ± 0.5774")   # mean of the ratings ± their standard error
    assert "not judged" in md.split("|")[0]          # the caption says what the word means
    assert "Δ" not in md.split("\n| Task")[1] and "**" not in md

    lines = list(csv.DictReader(open(out / "run_judge_run_chat_judge.csv")))
    words = {(r["task"], r["column"]): r for r in lines if r["column"] != "pivot"}
    assert {r["text"] for r in words.values()} == {NOT_JUDGED, NO_RATING}
    assert all(r["value"] == "" and r["bold"] == "0" and r["change_pct"] == "" for r in words.values())
    assert words[("gsm8k", "fused")]["source_file"].endswith("chat_judge.json")
    assert NOT_JUDGED in (out / "run_judge_run_chat_judge.tex").read_text()
    page = (out / "run_judge_run_chat_judge.html").read_text()
    assert f">{NOT_JUDGED}</td>" in page and f">{html.escape(NO_RATING)}</td>" in page
