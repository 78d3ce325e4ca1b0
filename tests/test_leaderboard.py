"""`fusebench leaderboard`: a board file of comparable numbers; entries only on exactly the board's data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from fusebench.checksums import seal
from fusebench.cli import main as fusebench_main
from fusebench.errors import FusebenchError
from fusebench.report.board import entry_from_manifests, load_board, load_entries, normalised, ranked
from fusebench.report.store import Evaluation, ResultsStore

REPO = Path(__file__).resolve().parents[1]
SHA = {"legal": "a" * 64, "code": "c" * 64}


def board_yaml(directory: Path, recipe: str = "recipes/smoke.yaml", sha: dict | None = None, docs: int = 5) -> Path:
    sha = sha or SHA
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "board.yaml").write_text(yaml.safe_dump({
        "name": "test-board", "description": "two domains.",
        "suites": {"perplexity": {"metric": "bits_per_byte", "higher_is_better": False, "random_baseline": 8.0,
                                  "best": 0.0, "max_length": 128, "tasks": {
                                      t: {"sha256": sha[t], "documents": docs, "rebuild": {"recipe": recipe, "corpus": t}}
                                      for t in sha}}}}))
    return directory


def manifest(values: dict[str, float], sha: dict | None = None, docs: int = 5, context: int = 128) -> dict:
    sha = sha or SHA
    return {"suite": "perplexity", "backend": {"max_length": context},
            "tasks": {t: {"n_docs": docs, "data": {"sha256": sha[t], "path": f"/elsewhere/{t}/test.jsonl"}}
                      for t in values},
            "scores": [{"task": t, "metric": "bits_per_byte", "value": v, "stderr": 0.01} for t, v in values.items()]}


def test_an_entry_scored_on_other_data_is_refused(tmp_path):
    board = load_board(board_yaml(tmp_path))
    entry = entry_from_manifests(board, "ok", "m", "hub", [manifest({"legal": 2.0, "code": 3.0})])
    assert entry.scores == {"perplexity/legal": 2.0, "perplexity/code": 3.0}
    other = {**SHA, "code": "d" * 64}
    with pytest.raises(FusebenchError, match="scored on other data than the board for perplexity/code"):
        entry_from_manifests(board, "x", "m", "hub", [manifest({"legal": 2.0, "code": 3.0}, sha=other)])
    with pytest.raises(FusebenchError, match="other data"):                       # same file, fewer documents
        entry_from_manifests(board, "x", "m", "hub", [manifest({"legal": 2.0, "code": 3.0}, docs=1)])
    with pytest.raises(FusebenchError, match="256-token context"):
        entry_from_manifests(board, "x", "m", "hub", [manifest({"legal": 2.0, "code": 3.0}, context=256)])
    with pytest.raises(FusebenchError, match="not scored on perplexity/code"):
        entry_from_manifests(board, "x", "m", "hub", [manifest({"legal": 2.0})])


def test_ranking_is_the_mean_of_the_boards_metric_and_normalised_only_on_a_mixed_board(tmp_path):
    board = load_board(board_yaml(tmp_path))
    suite = board.suites["perplexity"]
    assert normalised(suite, 8.0) == 0.0 and normalised(suite, 0.0) == 100.0 and normalised(suite, 2.0) == 75.0
    a = entry_from_manifests(board, "a", "m", "hub", [manifest({"legal": 2.0, "code": 4.0})])   # 3.0 bpb
    b = entry_from_manifests(board, "b", "m", "hub", [manifest({"legal": 1.0, "code": 6.0})])   # 3.5 bpb
    rows = ranked(board, [b, a])
    assert [r["name"] for r in rows] == ["a", "b"] and rows[0]["score"] == pytest.approx(3.0)
    assert rows[1]["score"] == pytest.approx(3.5)
    mixed = board.model_copy(update={"suites": {**board.suites, "acc": suite.model_copy(update={
        "metric": "acc", "higher_is_better": True, "random_baseline": 25.0, "best": 100.0, "tasks": {}})}})
    assert [r["score"] for r in ranked(mixed, [a])] == [pytest.approx(62.5)]   # normalised: 75, 50


def test_sync_enters_matching_runs_with_their_seed_mean_and_refuses_others(tmp_path, capsys):
    board_dir = board_yaml(tmp_path / "board")
    results = tmp_path / "results"
    run = results / "smoke-0123abcd"
    for model, seed, values in (("clm", 0, (2.0, 3.0)), ("clm", 1, (2.2, 3.2)), ("target", None, (2.5, 3.5))):
        folder = run / model / (f"seed-{seed}" if seed is not None else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "perplexity.manifest.json").write_text(json.dumps(manifest(dict(zip(SHA, values)))))
    (run / "run.json").write_text(json.dumps({"recipe": "smoke", "models": {}}))
    other = results / "elsewhere-89abcdef" / "big"
    other.mkdir(parents=True)
    (other / "perplexity.manifest.json").write_text(json.dumps(manifest({"legal": 0.5, "code": 0.5},
                                                                        sha={**SHA, "legal": "e" * 64})))
    (other.parent / "run.json").write_text(json.dumps({"recipe": "elsewhere", "models": {}}))
    seal(run), seal(other.parent)   # as `fusebench run` seals what it publishes
    assert fusebench_main(["leaderboard", "sync", "--board", str(board_dir), "--results", str(results),
                           "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "refused elsewhere/big" in printed and "other data" in printed     # the better-looking model stays off
    entries = {e.name: e for e in load_entries(board_dir)}
    assert set(entries) == {"smoke/clm", "smoke/target"}
    assert entries["smoke/clm"].scores["perplexity/legal"] == pytest.approx(2.1) and entries["smoke/clm"].seeds == [0, 1]
    text = "".join(p.read_text() for p in (board_dir / "entries").glob("*.json"))
    assert not re.search(r'"(/|[A-Z]:\\\\)', text)                             # portable: no absolute paths
    out = tmp_path / "out"
    assert "mean of the board's metric" in (out / "leaderboard.md").read_text()
    assert '<img src="leaderboard.svg"' in (out / "leaderboard.html").read_text()
    assert "REPRODUCED" in (out / "leaderboard.svg").read_text()
    assert (out / "leaderboard.png").stat().st_size > 5_000


def test_the_shipped_board_is_portable():
    text = (REPO / "results" / "leaderboard" / "board.yaml").read_text()
    board = load_board(REPO / "results" / "leaderboard")
    for suite in board.suites.values():
        for task in suite.tasks.values():
            assert not Path(task.rebuild.recipe).is_absolute() and (REPO / task.rebuild.recipe).exists()
    assert "/tmp" not in text and "/work" not in text


def test_add_scores_one_model_on_the_rebuilt_board_data_and_touches_no_other_row(tmp_path, tiny_llama_dir, capsys):
    import hashlib

    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.pipeline.runner import Runner

    # the smoke recipe's code and legal test splits as a board: their hashes taken from one build
    g = GraphBuilder(load_recipe(REPO / "recipes" / "smoke.yaml"))
    ids = {t: g.corpus(t) for t in SHA}
    runner = Runner(list(g.stages.values()), tmp_path / "w" / "corpora")
    runner.run("corpus:")
    sha = {t: hashlib.sha256((runner.path(s) / "test.jsonl").read_bytes()).hexdigest() for t, s in ids.items()}
    docs = {t: sum(1 for _ in open(runner.path(s) / "test.jsonl")) for t, s in ids.items()}
    board_dir = board_yaml(tmp_path / "board", sha=sha, docs=docs["code"])
    data = yaml.safe_load((board_dir / "board.yaml").read_text())
    data["suites"]["perplexity"]["tasks"]["legal"]["documents"] = docs["legal"]
    (board_dir / "board.yaml").write_text(yaml.safe_dump(data))
    (board_dir / "entries").mkdir()
    shutil.copy(Path(__file__), board_dir / "entries" / "keep.txt")                 # any other file stays as is
    assert fusebench_main(["leaderboard", "add", str(tiny_llama_dir), "--name", "tiny-new", "--board",
                           str(board_dir), "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out")]) == 0
    (entry,) = load_entries(board_dir)
    assert entry.name == "tiny-new" and entry.data == {f"perplexity/{t}": sha[t] for t in SHA}
    # what was scored, by content: each weight file's sha256, not the folder's name
    assert entry.weights == {"model.safetensors": hashlib.sha256(
        (tiny_llama_dir / "model.safetensors").read_bytes()).hexdigest()}
    assert set(entry.items) == {f"perplexity/{t}" for t in SHA} and len(entry.items["perplexity/code"].doc_ids) == docs["code"]
    assert all(0 < v < 20 for v in entry.scores.values())                         # a real score of a random model
    assert (board_dir / "entries" / "keep.txt").read_bytes() == Path(__file__).read_bytes()
    assert "tiny-new" in capsys.readouterr().out
    # a board whose hash this version cannot rebuild refuses to score anything
    bad = board_yaml(tmp_path / "bad", sha={**sha, "code": "0" * 64}, docs=docs["code"])
    assert fusebench_main(["leaderboard", "add", str(tiny_llama_dir), "--board", str(bad),
                           "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out2")]) == 2
    assert "does not match the board's sha256" in capsys.readouterr().err
    assert not (bad / "entries").exists()


def test_empty_board_and_add_without_model_are_user_errors(tmp_path, capsys):
    board_dir = board_yaml(tmp_path / "b")
    assert fusebench_main(["leaderboard", "--board", str(board_dir), "--out", str(tmp_path / "o")]) == 2
    assert "no entries yet" in capsys.readouterr().err
    assert fusebench_main(["leaderboard", "add", "--board", str(board_dir), "--out", str(tmp_path / "o")]) == 2
    assert "needs a model" in capsys.readouterr().err
    assert fusebench_main(["leaderboard", "--board", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "board.yaml" in capsys.readouterr().err


def test_store_still_reads_runs_written_by_add_run(tmp_path):
    ResultsStore(tmp_path).add_run("r", [Evaluation("m", "s", {"results": {"t": {"acc,none": 0.5}}})])
    assert list(ResultsStore(tmp_path).frame()["model"]) == ["m"]


def test_the_board_inside_results_is_not_read_as_a_run(tmp_path):
    board_dir = board_yaml(tmp_path / "results" / "leaderboard")
    entry = entry_from_manifests(load_board(board_dir), "a", "m", "hub", [manifest({"legal": 2.0, "code": 3.0})])
    from fusebench.report.board import write_entry

    write_entry(board_dir, entry)
    ResultsStore(tmp_path / "results").add_run("r", [Evaluation("m", "s", {"results": {"t": {"acc,none": 0.5}}})])
    assert ResultsStore(tmp_path / "results").run_ids() == ["r"]
    assert list(ResultsStore(tmp_path / "results").frame()["run_id"]) == ["r"]


def test_sync_refuses_a_run_whose_files_changed_since_it_was_published(tmp_path, capsys):
    """Issue 18: a score edited in a published manifest (2.0 -> 0.2 bits per byte) never reaches the board."""
    board_dir = board_yaml(tmp_path / "board")
    run = tmp_path / "results" / "smoke-0123abcd"
    (run / "clm").mkdir(parents=True)
    (run / "clm" / "perplexity.manifest.json").write_text(json.dumps(manifest(dict(zip(SHA, (2.0, 3.0))))))
    (run / "run.json").write_text(json.dumps({"recipe": "smoke", "models": {}}))
    seal(run)
    forged = run / "clm" / "perplexity.manifest.json"
    forged.write_text(json.dumps(manifest(dict(zip(SHA, (0.2, 3.0))))))
    assert fusebench_main(["leaderboard", "sync", "--board", str(board_dir), "--results", str(tmp_path / "results"),
                           "--out", str(tmp_path / "out")]) == 2   # nothing left to rank
    printed = capsys.readouterr().out
    assert "refused smoke-0123abcd" in printed and str(forged) in printed
    assert not load_entries(board_dir)
