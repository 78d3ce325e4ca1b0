"""Task YAMLs are rendered into the shared workdir by every rank that evaluates (found by the paper rehearsal: under
2-process DDP one rank read `bbh_cot_fewshot_logical_deduction_seven_objects.yaml` while the other was rewriting it,
and lm-eval failed with "Expected YAML dict ..., got NoneType"). A reader must only ever see a whole file: the
include line and the suite's generation settings together.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import yaml


def _render_repeatedly(workdir: str, seconds: float) -> None:
    from fusebench.evaluate.suites import SuiteContext, plan_suite

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        plan_suite("bbh", SuiteContext(Path(workdir), online=True), ("navigate", "snarks"), refuse_offline_hub=False)


def test_a_reader_never_sees_a_half_written_task_yaml(tmp_path):
    from fusebench.evaluate.suites import SuiteContext, plan_suite

    plan = plan_suite("bbh", SuiteContext(tmp_path, online=True), ("navigate", "snarks"), refuse_offline_hub=False)
    [folder] = plan.include_paths
    files = sorted(Path(folder).glob("*.yaml"))
    assert len(files) == 2
    writer = mp.get_context("fork").Process(target=_render_repeatedly, args=(str(tmp_path), 3.0))
    writer.start()
    seen = 0
    try:
        while writer.is_alive():
            for f in files:
                doc = yaml.safe_load(f.read_text(encoding="utf-8"))
                assert isinstance(doc, dict) and "include" in doc and "generation_kwargs" in doc, doc
                seen += 1
    finally:
        writer.join()
    assert seen > 100  # the reader really ran while the writer rewrote the files


def _prepare_repeatedly(workdir: str, seconds: float) -> None:
    from fusebench.evaluate.multipl_e import prepare_code_tasks

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        prepare_code_tasks(workdir, ["py", "rs"])


def test_code_tasks_are_never_seen_half_written(tmp_path):
    """The MultiPL-E / HumanEval include folder (YAMLs, the hooks module lm-eval imports, JSON-lines data) is
    rewritten by every evaluating rank too."""
    from fusebench.evaluate.multipl_e import prepare_code_tasks

    out = prepare_code_tasks(tmp_path, ["py", "rs"])
    yamls = sorted(out.glob("*.yaml"))
    data = sorted((out / "data").glob("*.jsonl"))
    hooks = (out / "utils.py").read_text(encoding="utf-8")
    writer = mp.get_context("fork").Process(target=_prepare_repeatedly, args=(str(tmp_path), 3.0))
    writer.start()
    seen = 0
    try:
        while writer.is_alive():
            for f in yamls:
                assert f.read_text(encoding="utf-8").strip(), f
            for f in data:
                lines = f.read_text(encoding="utf-8").splitlines()
                assert lines and all(line.endswith("}") for line in lines), f
            assert (out / "utils.py").read_text(encoding="utf-8") == hooks
            seen += 1
    finally:
        writer.join()
    assert seen > 10
