"""Artifacts that verify themselves (issue 15, part 3): a finished stage records its files' sha256, and a same-size
byte flip in a store shard or a model's weights stops the next run that reads them with exit 2, naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fusebench.cli import main
from fusebench.pipeline.integrity import sha256_file

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"
EXTRACT = "extract:target@mix.sp.64.n32"


def _run(workdir: Path, only: str) -> int:
    return main(["run", str(SMOKE), "--only", only, "--workdir", str(workdir), "--results", str(workdir / "results"),
                 "--reports", str(workdir / "reports")])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workdir holding the target model and its distribution store (corpus, tokenizer, chunks, model, extract)."""
    workdir = tmp_path_factory.mktemp("verify") / "w"
    assert _run(workdir, EXTRACT) == 0
    return workdir


@pytest.fixture
def workdir(finished, tmp_path) -> Path:
    """A private copy, so a test may damage it."""
    return Path(shutil.copytree(finished, tmp_path / "w", symlinks=True))  # models/<name> stay links


def _one(workdir: Path, pattern: str) -> Path:
    (found,) = [p for p in workdir.glob(pattern) if p.is_dir()]  # not the stage's .lock file
    return found


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_finished_stages_record_the_sha256_of_every_file_and_verify_passes(finished, capsys):
    records = list(finished.glob("cache/*/*/.stage.json"))
    assert len(records) == 7  # corpus x2, tokenizer, chunks x2, model, extract
    for record in records:
        files = json.loads(record.read_text())["files"]
        on_disk = {p.relative_to(record.parent).as_posix() for p in record.parent.rglob("*")
                   if p.is_file() and p.name != ".stage.json"}
        assert set(files) == on_disk and files
        for rel, info in files.items():
            assert info["sha256"] == sha256_file(record.parent / rel)
    assert main(["verify", str(finished)]) == 0
    assert "7 stages: 7 verified, 0 corrupted" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["data", "header"])
def test_byte_flip_in_a_store_shard_stops_the_next_run_that_reads_it(workdir, capsys, where):
    stage = _one(workdir, "cache/extract/target@mix.sp.64.n32-*")
    shard = stage / "store" / "shard-00000" / "topk_nlp.npy"
    size = shard.stat().st_size
    _flip(shard, size - 7 if where == "data" else shard.read_bytes().index(b"'shape': (") + 10)  # a shape digit
    assert shard.stat().st_size == size
    assert _run(workdir, "model:kd") == 2
    err = capsys.readouterr().err
    assert str(shard) in err and str(stage) in err and f"Delete {stage}" in err and "Traceback" not in err
    assert not list(workdir.glob("cache/model/teacher-*")), "nothing may run before the inputs are checked"
    assert main(["verify", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert "CORRUPTED" in captured.out and str(shard) in captured.err


def test_byte_flip_in_model_weights_stops_the_next_run_and_deleting_the_stage_recomputes_it(workdir, capsys):
    stage = _one(workdir, "cache/model/target-*")
    weights = stage / "model.safetensors"
    _flip(weights, weights.stat().st_size - 100)
    assert _run(workdir, "model:clm") == 2
    err = capsys.readouterr().err
    assert str(weights) in err and f"Delete {stage}" in err and "model:clm" in err and "Traceback" not in err
    assert not list(workdir.glob("cache/model/clm-*"))

    shutil.rmtree(stage)  # the fix the message gives
    assert _run(workdir, "model:clm") == 0
    assert sha256_file(weights) == json.loads((stage / ".stage.json").read_text())["files"]["model.safetensors"]["sha256"]


def test_stages_finished_before_checksums_are_read_with_a_warning_and_can_be_adopted(workdir, capsys):
    stage = _one(workdir, "cache/chunks/mix.sp.64.n32-*")
    record = json.loads((stage / ".stage.json").read_text())
    del record["files"]
    (stage / ".stage.json").write_text(json.dumps(record))
    assert _run(workdir, "chunks:mix") == 0          # cached: the run hands it back, so it is checked
    assert "finished before fusebench recorded checksums" in capsys.readouterr().err
    assert main(["verify", str(workdir)]) == 0
    assert "1 without checksums" in capsys.readouterr().out
    assert main(["verify", "--adopt", str(workdir)]) == 0
    _flip(stage / "chunks.jsonl", 5)
    assert main(["verify", str(workdir)]) == 2
    assert "chunks.jsonl" in capsys.readouterr().err


def test_verify_checks_a_bare_distribution_store(finished, tmp_path, capsys):
    store = Path(shutil.copytree(_one(finished, "cache/extract/*-*") / "store", tmp_path / "store"))
    assert main(["verify", str(store)]) == 0
    _flip(store / "shard-00000" / "topk_ids.npy", 200)
    assert main(["verify", str(store)]) == 2
    assert "topk_ids.npy" in capsys.readouterr().err


def test_a_file_added_to_a_finished_model_directory_stops_the_next_run_and_verify(workdir, capsys):
    """A stage directory holds exactly the files its record lists: an added `added_tokens.json` grows the tokenizer
    (800 -> 801) without changing any recorded file, so it must be caught as a change too."""
    stage = _one(workdir, "cache/model/target-*")
    added = stage / "added_tokens.json"
    added.write_text(json.dumps({"<forged>": 800}))
    assert _run(workdir, "model:clm") == 2
    err = capsys.readouterr().err
    assert str(added) in err and f"Delete {stage}" in err and "Traceback" not in err
    assert not list(workdir.glob("cache/model/clm-*"))
    assert main(["verify", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert "CORRUPTED" in captured.out and str(added) in captured.err


def test_a_stage_whose_record_was_deleted_is_named_by_the_next_run_and_by_verify(workdir, capsys):
    stage = _one(workdir, "cache/chunks/mix.sp.64.n32-*")
    (stage / ".stage.json").unlink()
    assert _run(workdir, "chunks:mix") == 2
    err = capsys.readouterr().err
    assert "chunks:mix" in err and str(stage) in err and ".stage.json" in err and f"Delete {stage}" in err
    assert "Traceback" not in err and "Directory not empty" not in err
    assert main(["verify", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert "7 stages: 6 verified" in captured.out and "1 without a record" in captured.out
    assert str(stage) in captured.err and f"rm -r {stage}" in captured.err

    shutil.rmtree(stage)  # the fix both give
    assert _run(workdir, "chunks:mix") == 0 and main(["verify", str(workdir)]) == 0


def test_an_unreadable_stage_record_is_listed_by_verify_and_the_others_are_still_checked(workdir, capsys):
    stage = _one(workdir, "cache/chunks/mix.sp.64.n32-*")
    (stage / ".stage.json").write_text('{"files": ')
    assert main(["verify", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert f"CORRUPTED  {stage}" in captured.out and "7 stages: 6 verified, 1 corrupted" in captured.out
    assert str(stage / ".stage.json") in captured.err
