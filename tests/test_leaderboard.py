"""`fusebench leaderboard`: ranking every reproduced model, and adding one without re-evaluating the others."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fusebench.cli import main as fusebench_main
from fusebench.report.leaderboard import AVG_UP, MEAN_RANK, build_leaderboard
from fusebench.report.store import Evaluation, ResultsStore


def lm_eval_shape(metric: str, values: dict[str, float], up: bool, date: float) -> dict:
    """lm-eval 0.4.13's results dict for one metric over some tasks (see test_report_store.py for the real one)."""
    return {"results": {t: {"alias": t, f"{metric},none": v, f"{metric}_stderr,none": "N/A"} for t, v in values.items()},
            "group_subtasks": {}, "versions": {t: 1.0 for t in values}, "n-shot": {t: 0 for t in values},
            "higher_is_better": {t: {metric: up} for t in values}, "date": date, "lm_eval_version": "0.4.13"}


def bpb(legal: float, code: float, date: float = 1.0) -> dict:
    return lm_eval_shape("bits_per_byte", {"bpb_legal": legal, "bpb_code": code}, up=False, date=date)


def acc(arc: float, boolq: float, date: float = 1.0) -> dict:
    return lm_eval_shape("acc", {"arc_easy": arc, "boolq": boolq}, up=True, date=date)


@pytest.fixture
def results(tmp_path) -> Path:
    store = ResultsStore(tmp_path / "results")
    store.add_run("tiny-seed0", [
        Evaluation("tiny-target", "perplexity", bpb(1.50, 1.20), {"role": "target"}),
        Evaluation("tiny-src-neox", "perplexity", bpb(1.40, 1.40), {"role": "source"}),
        Evaluation("tiny-clm", "perplexity", bpb(1.48, 1.18), {"role": "baseline"}),
        Evaluation("tiny-fusellm", "perplexity", bpb(1.35, 1.16), {"role": "fused"}),
        Evaluation("tiny-target", "commonsense", acc(0.50, 0.60), {"role": "target"}),
        Evaluation("tiny-clm", "commonsense", acc(0.52, 0.60), {"role": "baseline"}),
        Evaluation("tiny-fusellm", "commonsense", acc(0.55, 0.61), {"role": "fused"}),
    ])
    return tmp_path / "results"


def test_models_are_ranked_by_mean_rank_with_bits_per_byte_lower_is_better(results):
    board = build_leaderboard(ResultsStore(results).frame())
    frame = board.frame.set_index("model")
    assert list(board.frame["model"]) == ["tiny-fusellm", "tiny-clm", "tiny-target", "tiny-src-neox"]
    assert board.higher_is_better == {"commonsense": True, "perplexity": False}
    assert frame.loc["tiny-fusellm", "perplexity"] == pytest.approx((1.35 + 1.16) / 2)
    assert frame.loc["tiny-fusellm", "commonsense"] == pytest.approx(58.0)      # percent, as in the tables
    # perplexity ranks (lower wins): fusellm 1, clm 2, target 3 (1.35), neox 4 (1.40); commonsense: 1, 2, 3
    assert frame.loc["tiny-target", MEAN_RANK] == pytest.approx(3.0)
    assert frame.loc["tiny-src-neox", MEAN_RANK] == pytest.approx(4.0)           # ranked on what it has
    assert frame.loc["tiny-fusellm", AVG_UP] == pytest.approx(58.0)              # bits per byte not averaged in
    assert frame.loc["tiny-src-neox", "role"] == "source"
    assert list(board.frame["rank"]) == [1, 2, 3, 4]


def test_leaderboard_command_writes_md_csv_png_and_prints_the_table(results, tmp_path, capsys):
    out = tmp_path / "reports"
    assert fusebench_main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | tiny-fusellm | fused | tiny-seed0 | 58.00 | 1.2550 | 1.00 | 58.00 |\n| 2 | tiny-clm" in printed
    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert [r["model"] for r in rows][0] == "tiny-fusellm" and rows[0][MEAN_RANK] == "1.0"
    assert "mean rank" in (out / "leaderboard.md").read_text()
    assert (out / "leaderboard.png").stat().st_size > 10_000 and (out / "leaderboard.svg").exists()


def test_suite_filter_ranks_on_that_suite_only(results):
    board = build_leaderboard(ResultsStore(results).frame(), ["perplexity"])
    assert board.benchmarks == ["perplexity"] and AVG_UP not in board.frame.columns
    assert list(board.frame["model"]) == ["tiny-fusellm", "tiny-clm", "tiny-target", "tiny-src-neox"]


def test_a_re_evaluated_model_shows_its_latest_numbers(results):
    ResultsStore(results).add_run("tiny-seed0-rerun", [Evaluation("tiny-target", "perplexity", bpb(1.0, 1.0, 2.0))])
    frame = build_leaderboard(ResultsStore(results).frame()).frame.set_index("model")
    assert frame.loc["tiny-target", "perplexity"] == pytest.approx(1.0)
    assert frame.loc["tiny-target", "runs"] == "tiny-seed0,tiny-seed0-rerun"


def test_empty_store_and_add_without_model_are_user_errors(tmp_path, capsys):
    assert fusebench_main(["leaderboard", "--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "nothing to rank" in capsys.readouterr().err
    assert fusebench_main(["leaderboard", "add", "--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "needs a model" in capsys.readouterr().err


def test_add_refuses_a_name_already_on_the_board(results, tmp_path, capsys):
    assert fusebench_main(["leaderboard", "add", str(tmp_path), "--name", "tiny-clm", "--results", str(results),
                           "--out", str(tmp_path / "o")]) == 2
    assert "already on the leaderboard" in capsys.readouterr().err


def test_add_scores_only_the_new_model_on_the_boards_own_corpus(tmp_path, tiny_llama_dir, stdlib_texts, capsys):
    corpus = tmp_path / "corpora" / "code"
    corpus.mkdir(parents=True)
    (corpus / "test.jsonl").write_text("".join(json.dumps({"text": t[:400]}) + "\n" for t in stdlib_texts[:3]))
    manifest = {"role": "target", "tasks": {"code": {"lm_eval_task": "ppl_code",
                                                      "data": {"path": str(corpus / "test.jsonl")}}}}
    results = tmp_path / "results"
    ResultsStore(results).add_run("tiny-seed0", [Evaluation("tiny-target", "perplexity", lm_eval_shape(
        "bits_per_byte", {"ppl_code": 9.0}, up=False, date=1.0), manifest)])
    before = {p: p.read_bytes() for p in results.rglob("*.json")}
    assert fusebench_main(["leaderboard", "add", str(tiny_llama_dir), "--name", "tiny-new", "--limit", "2",
                           "--results", str(results), "--workdir", str(tmp_path / "work"),
                           "--out", str(tmp_path / "reports")]) == 0
    assert {p: p.read_bytes() for p in before} == before                      # the board's model was not re-run
    frame = ResultsStore(results).frame()
    new = frame[(frame["model"] == "tiny-new") & (frame["metric"] == "bits_per_byte")]
    assert new["task"].tolist() == ["ppl_code"] and new["run_id"].tolist() == ["leaderboard-tiny-new"]
    assert 0 < new["value"].iloc[0] < 20                                       # a real score of a random model
    assert "tiny-new" in capsys.readouterr().out
    board = {r["model"]: r for r in csv.DictReader(open(tmp_path / "reports" / "leaderboard.csv"))}
    assert set(board) == {"tiny-target", "tiny-new"}
    assert float(board["tiny-new"]["perplexity"]) == pytest.approx(new["value"].iloc[0])


def test_models_of_the_same_name_from_different_recipes_are_kept_apart(tmp_path):
    store = ResultsStore(tmp_path)
    store.add_run("tiny-0123abcd", [Evaluation("target", "perplexity", bpb(3.0, 3.0, 3.0))])
    store.add_run("smollm2-89abcdef", [Evaluation("target", "perplexity", bpb(2.0, 2.0, 2.0))])
    frame = build_leaderboard(ResultsStore(tmp_path).frame()).frame.set_index("model")
    assert frame.loc["tiny/target", "perplexity"] == pytest.approx(3.0)
    assert frame.loc["smollm2/target", "perplexity"] == pytest.approx(2.0)
