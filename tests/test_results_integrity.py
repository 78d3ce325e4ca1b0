"""Results that nothing edits unnoticed (issue 18): every file a report reads is checksummed and checked first.

A run seals what it publishes (`results/<run>/checksums.json`: every file's size and sha256, and no other file);
`fusebench report`, the next run and `fusebench verify` check the seal before reading, so a forged number (a
perplexity.json whose bits per byte went 5.81 -> 0.1235) stops them with exit 2 naming the file, never reaching a table.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fusebench.checksums import SEAL, seal
from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.report.store import Evaluation, ResultsStore

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"


def _run(workdir: Path) -> int:
    return main(["run", str(SMOKE), "--only", "eval:target.perplexity", "--workdir", str(workdir)])


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A workdir whose run evaluated the target's perplexity and published it into <workdir>/results."""
    workdir = tmp_path_factory.mktemp("results_integrity") / "w"
    assert _run(workdir) == 0
    return workdir


@pytest.fixture
def workdir(published, tmp_path) -> Path:
    return Path(shutil.copytree(published, tmp_path / "w", symlinks=True))


def _result(workdir: Path) -> Path:
    (path,) = workdir.glob("results/smoke-*/target/perplexity.json")
    return path


def _forge(path: Path) -> None:
    """What an editor would do: one bits-per-byte figure replaced, the file still valid lm-eval JSON."""
    text = path.read_text()
    forged, n = re.subn(r'("bits_per_byte,none": )[0-9.]+', r"\g<1>0.1235", text, count=1)
    assert n == 1
    path.write_text(forged)


def test_a_published_run_is_sealed_and_verify_checks_it(published, capsys):
    run = _result(published).parents[1]
    recorded = json.loads((run / SEAL).read_text())["files"]
    assert {"run.json", "target/perplexity.json", "target/perplexity.manifest.json",
            "target/perplexity.items.json.gz"} <= set(recorded)
    assert main(["verify", str(published)]) == 0
    assert f"ok         {run}" in capsys.readouterr().out


def test_a_forged_result_stops_the_next_run_the_report_and_verify(workdir, capsys):
    result = _result(workdir)
    _forge(result)
    assert _run(workdir) == 2
    err = capsys.readouterr().err
    assert str(result) in err and "changed since they were written" in err and "Traceback" not in err
    assert main(["report", "--results", str(workdir / "results"), "--out", str(workdir / "rep")]) == 2
    err = capsys.readouterr().err
    assert str(result) in err and "0.1235" not in "".join(p.read_text() for p in (workdir / "rep").rglob("*.md"))
    assert main(["verify", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert "CHANGED" in captured.out and str(result) in captured.err


def test_a_file_added_to_a_stored_run_or_a_missing_seal_is_refused(workdir, capsys):
    run = _result(workdir).parents[1]
    extra = run / "forged" / "perplexity.json"
    extra.parent.mkdir()
    shutil.copy(_result(workdir), extra)
    assert main(["report", "--results", str(workdir / "results"), "--out", str(workdir / "rep")]) == 2
    assert str(extra) in capsys.readouterr().err
    shutil.rmtree(extra.parent)
    (run / SEAL).unlink()
    with pytest.raises(FusebenchError, match=rf"{re.escape(str(run))} carries no {SEAL}.*verify --adopt"):
        ResultsStore(workdir / "results").frame()
    assert main(["verify", str(workdir)]) == 2
    assert main(["verify", "--adopt", str(workdir)]) == 0      # the owner vouches for the files as they are
    assert not ResultsStore(workdir / "results").frame().empty


def test_adopt_never_reseals_a_run_whose_files_changed(workdir, capsys):
    _forge(_result(workdir))
    assert main(["verify", "--adopt", str(workdir)]) == 2
    assert str(_result(workdir)) in capsys.readouterr().err


def test_add_run_seals_what_it_writes_and_a_reader_checks_it(tmp_path):
    store = ResultsStore(tmp_path)
    res = {"results": {"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.05}}}
    run = store.add_run("r", [Evaluation("m", "commonsense", res)], roles={"target": "m"})
    assert set(json.loads((run / SEAL).read_text())["files"]) == {"run.json", "m/commonsense.json",
                                                                  "m/commonsense.manifest.json"}
    assert store.frame()["value"].tolist() == [50.0]
    (run / "m" / "commonsense.json").write_text(json.dumps({"results": {"arc_easy": {"acc,none": 0.9}}}))
    with pytest.raises(FusebenchError, match="commonsense.json has .* bytes where"):
        store.frame()


def test_the_repositorys_published_results_and_the_papers_numbers_are_sealed(tmp_path, capsys):
    assert main(["verify", str(REPO / "results")]) == 0
    out = capsys.readouterr().out
    assert f"ok         {REPO / 'results' / 'reported'}" in out
    copy = Path(shutil.copytree(REPO / "results" / "reported", tmp_path / "results" / "reported"))
    table = copy / "table1_bbh.csv"
    table.write_text(table.read_text().replace("74.40", "94.40", 1))
    with pytest.raises(FusebenchError, match="table1_bbh.csv"):
        ResultsStore(tmp_path / "results").frame()


def test_seal_with_added_files_vouches_only_for_those(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    seal(tmp_path, added=[tmp_path / "a.json"])
    (tmp_path / "b.json").write_text("{}")           # written by someone else, never named
    (tmp_path / "c.json").write_text("{}")
    seal(tmp_path, added=[tmp_path / "c.json"])
    from fusebench.checksums import check_sealed

    assert [p for p in check_sealed(tmp_path)] == [f"{tmp_path / 'b.json'} is not among the files recorded when "
                                                   "it was written (added since)"]


def test_an_evaluation_whose_stage_record_lost_its_checksums_is_never_published(workdir, capsys):
    """Forge the number in the cached eval stage itself and strip the stage's checksums: the next run must not
    republish it (under a fresh seal) with only a warning; it says how to vouch for the stage or recompute it."""
    (stage,) = workdir.glob("cache/eval/target.perplexity-*[0-9a-f]")
    (cached,) = stage.rglob("perplexity.json")
    _forge(cached)
    record = json.loads((stage / ".stage.json").read_text())
    del record["files"]
    (stage / ".stage.json").write_text(json.dumps(record))
    shutil.rmtree(_result(workdir).parents[1])
    assert _run(workdir) == 2
    err = capsys.readouterr().err
    assert str(stage) in err and "verify --adopt" in err and "Traceback" not in err
    assert not list(workdir.glob("results/smoke-*"))


def test_a_published_run_that_lost_its_run_json_and_seal_is_named_not_a_crash(workdir, capsys):
    run = _result(workdir).parents[1]
    (run / "run.json").unlink()
    (run / SEAL).unlink()
    assert _run(workdir) == 2
    err = capsys.readouterr().err
    assert f"{run} carries no {SEAL}" in err and "Traceback" not in err and "Directory not empty" not in err


def test_a_sealed_run_put_under_this_runs_name_is_not_taken_for_its_results(workdir, capsys):
    """Held-out case: another run's results (here: this run's, claiming other evaluations, sealed again by whoever
    moved them) under the directory name this run publishes to. The seal matches; the stages it names do not."""
    run = _result(workdir).parents[1]
    meta = json.loads((run / "run.json").read_text())
    meta["stages"] = {sid: "0" * 64 for sid in meta["stages"]}
    (run / "run.json").write_text(json.dumps(meta))
    seal(run)
    assert _run(workdir) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "other evaluations" in err and "Traceback" not in err
