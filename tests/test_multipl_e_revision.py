"""The MultiPL-E revision the task YAMLs pin is the data scored, offline too.

Offline, `datasets` drops `revision` and reads the newest prepared copy of the config, whichever commit it came from
(fusebench/evaluate/revisions.py). These tests build datasets' prepared cache in a temp dir (tests/hubcache.py), as
an online `load_dataset(..., revision=<commit>)` leaves it, at the pinned commit and at another one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fusebench.cli import main as fusebench_main
from fusebench.errors import FusebenchError
from fusebench.evaluate.suites import SuiteContext, plan_suite
from hubcache import multipl_e_pinned_revision, write_multipl_e

REPO = Path(__file__).resolve().parents[1]
PINNED = multipl_e_pinned_revision()
OTHER = "3a5f8a0f6c1e2b9d7c4e5f60718293a4b5c6d7e8"   # some other commit of nuprl/MultiPL-E


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch) -> Path:
    """A private HF_HOME whose datasets cache this process's `datasets` reads (it reads the setting at call time)."""
    import datasets.config

    hf_home = tmp_path / "hf_home"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")
    assert datasets.config.HF_HUB_OFFLINE, "these tests must run offline (conftest sets HF_DATASETS_OFFLINE=1)"
    return hf_home


def _age(hf_home: Path, commit: str, seconds: float) -> None:
    folder = next((hf_home / "datasets").glob(f"nuprl___*/humaneval-py/*/{commit}"))
    os.utime(folder, (folder.stat().st_atime - seconds, folder.stat().st_mtime - seconds))


def test_offline_datasets_ignores_the_revision_and_reads_the_newest_copy(datasets_cache):
    """What makes the check necessary, pinned so a datasets upgrade that changes it is noticed."""
    from datasets import load_dataset

    write_multipl_e(datasets_cache, PINNED, langs=("py",))
    write_multipl_e(datasets_cache, OTHER, langs=("py",))
    _age(datasets_cache, PINNED, 3600)
    data = load_dataset("nuprl/MultiPL-E", "humaneval-py", revision=PINNED, split="test")
    assert f"/{OTHER}/" in data.cache_files[0]["filename"]


def test_a_copy_prepared_at_another_revision_is_refused_offline(datasets_cache, tmp_path, tiny_llama_dir, capsys):
    write_multipl_e(datasets_cache, OTHER, langs=("py",))
    with pytest.raises(FusebenchError) as err:
        plan_suite("multipl-e", SuiteContext(tmp_path / "w", online=True), ("py",))
    message = str(err.value)
    assert "nuprl/MultiPL-E" in message and PINNED in message and OTHER in message
    assert f"revision={PINNED!r}" in message and "HF_DATASETS_OFFLINE" in message   # the fix
    # the pinned copy is there too, but older: datasets would still read the other one
    write_multipl_e(datasets_cache, PINNED, langs=("py",))
    _age(datasets_cache, PINNED, 3600)
    with pytest.raises(FusebenchError, match=OTHER):
        plan_suite("multipl-e", SuiteContext(tmp_path / "w", online=True), ("py",))
    # from the command line: one paragraph, exit 2, before the model loads
    assert fusebench_main(["eval", str(tiny_llama_dir), "--suite", "multipl-e:py", "--online", "--workdir",
                           str(tmp_path / "w2"), "--results", str(tmp_path / "results")]) == 2
    printed = capsys.readouterr().err
    assert OTHER in printed and "Traceback" not in printed
    assert not (tmp_path / "results").exists()
    # lm_eval's spelling: the group (opened to its tasks) from the include path
    for tasks in ("multipl_e",):
        assert fusebench_main(["eval", str(tiny_llama_dir), "--tasks", tasks, "--data", "hub", "--include_path",
                               str(REPO / "tasks" / "multipl_e"), "--workdir", str(tmp_path / "w3"),
                               "--output_path", str(tmp_path / "out")]) == 2
        printed = capsys.readouterr().err
        assert "multipl_e_py" in printed and OTHER in printed and "Traceback" not in printed
    assert not (tmp_path / "out").exists()


def test_the_pinned_revision_is_accepted_and_recorded_in_the_manifest(datasets_cache, tmp_path, tiny_llama_dir):
    from fusebench.evaluate.api import evaluate_model

    write_multipl_e(datasets_cache, PINNED, langs=("py",))
    write_multipl_e(datasets_cache, OTHER, langs=("py",))
    _age(datasets_cache, OTHER, 3600)                           # the pinned copy is the newest: datasets reads it
    plan = plan_suite("multipl-e", SuiteContext(tmp_path / "w", online=True), ("py",))
    assert plan.revisions == {"py": PINNED}
    result = evaluate_model(tiny_llama_dir, ["multipl-e:py"], limit=1, online=True, workdir=tmp_path / "w",
                            results_dir=tmp_path / "results", device="cpu", batch_size=1)
    manifest = json.loads(result.suites[0].manifest_path.read_text())
    assert manifest["tasks"]["py"]["dataset"] == "nuprl/MultiPL-E"
    assert manifest["tasks"]["py"]["dataset_revision"] == PINNED
    assert manifest["tasks"]["py"]["n_docs"] == 1
    # lm_eval's spelling writes it into its manifest too
    assert fusebench_main(["eval", str(tiny_llama_dir), "--tasks", "multipl_e_py", "--data", "hub", "--limit", "1",
                           "--include_path", str(REPO / "tasks" / "multipl_e"), "--workdir", str(tmp_path / "w2"),
                           "--output_path", str(tmp_path / "out"), "--device", "cpu"]) == 0
    (written,) = (tmp_path / "out").rglob("manifest_*.json")
    assert json.loads(written.read_text())["dataset_revisions"] == {"multipl_e_py": PINNED}


def test_lm_eval_loading_another_revision_is_refused_when_the_task_loads(datasets_cache):
    """Plain `lm_eval --include_path tasks/multipl_e` (no fusebench pre-check), or an online run whose hub request
    fails (datasets then reads its cache): the rows are checked when the task loads, before any generation."""
    from lm_eval.tasks import TaskManager

    def docs() -> list[dict]:
        manager = TaskManager(include_path=str(REPO / "tasks" / "multipl_e"), include_defaults=False)
        return list(manager.load(["multipl_e_py"])["tasks"]["multipl_e_py"].test_docs())

    write_multipl_e(datasets_cache, OTHER, langs=("py",))
    with pytest.raises(FusebenchError, match=f"revision {OTHER}"):
        docs()
    write_multipl_e(datasets_cache, PINNED, langs=("py",))
    _age(datasets_cache, OTHER, 3600)
    rows = docs()
    assert len(rows) == 2 and all(r["name"].startswith("HumanEval_") for r in rows)
