"""Files every rank of a launch writes into the shared workdir at the same moment.

Found by CI: under `accelerate launch --num_processes 2` both ranks probed the workdir with the same
`logs/.write-test` file; one rank unlinked it between the other's write and unlink, and that rank stopped with
"cannot write to the workdir ...: No such file or directory" although the directory was writable. Any fixed
temporary name shared by two processes races the same way, so each writer here is run from two processes at once.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path


def _in_two_processes(target, *args) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0], "a process failed: see its traceback above"


def _probe_workdir(workdir: str, times: int) -> None:
    import logging

    from fusebench.pipeline.commands import _setup_logging

    for _ in range(times):
        _setup_logging(Path(workdir))
        for handler in logging.getLogger("fusebench").handlers:
            handler.close()


def test_probing_the_workdir_leaves_another_processs_probe_alone(tmp_path):
    """Deterministic form of the race: a probe file of another process is in flight when this one probes."""
    from fusebench.pipeline.commands import _setup_logging

    logs = tmp_path / "logs"
    logs.mkdir()
    theirs = logs / ".write-test"
    theirs.write_text("another rank's probe")
    _setup_logging(tmp_path)
    assert theirs.read_text() == "another rank's probe"
    assert not [p for p in logs.iterdir() if p.name.startswith(".write-test") and p != theirs]


def test_two_ranks_probe_the_same_workdir_at_once(tmp_path):
    _in_two_processes(_probe_workdir, str(tmp_path), 300)


def _write_bbh(out_dirs: list[str]) -> None:
    from fusebench.evaluate.bbh_offline import write_bbh_jsonl

    for out in out_dirs:
        write_bbh_jsonl(Path(out), ("navigate", "snarks"))


def test_two_ranks_write_the_packaged_bbh_files_at_once(tmp_path):
    outs = [str(tmp_path / f"bbh{i}") for i in range(100)]
    _in_two_processes(_write_bbh, outs)
    for out in outs:
        files = sorted(p.name for p in Path(out).iterdir())
        assert files == ["navigate.jsonl", "snarks.jsonl"], files  # no temporary left behind
        assert all(json.loads(line) for line in (Path(out) / "navigate.jsonl").read_text().splitlines())


def _write_manifests(path: str, times: int) -> None:
    from fusebench.evaluate.manifest import write_json

    for i in range(times):
        write_json({"i": i, "pad": "x" * 4096}, Path(path))


def test_two_ranks_write_the_same_json_at_once(tmp_path):
    times = 300
    target = tmp_path / "out" / "manifest.json"
    _in_two_processes(_write_manifests, str(target), times)
    assert json.loads(target.read_text())["i"] == times - 1
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]
