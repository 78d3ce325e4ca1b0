"""docs/PAPER.md's cost figures are generated from `fusebench plan`'s estimates and must be current (issue 21
item 11: the doc counted 7 stores, ~529 GB, where the plan has 6; two docs quoted 40 and 42 B/token)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fusebench.pipeline.docfigures import BEGIN, DOC, END, current

REPO = Path(__file__).resolve().parents[1]


def test_the_papers_cost_table_is_what_fusebench_plan_computes_now():
    proc = subprocess.run([sys.executable, "-m", "fusebench.pipeline.docfigures", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_table_counts_the_stores_the_plan_builds(tmp_path):
    from fusebench.pipeline.graph import build_stages
    from fusebench.pipeline.recipe import load_recipe

    block = current(DOC.read_text(encoding="utf-8"))
    assert block.startswith(BEGIN) and block.endswith(END)
    stages = build_stages(load_recipe(REPO / "recipes" / "paper.yaml"))
    stores = sum(s.kind in ("extract", "align") for s in stages)
    row = next(line for line in block.splitlines() if line.startswith("| `paper.yaml`"))
    assert f"| {stores} stores, ~" in row and stores == 6  # the same-tokenizer teacher is not aligned
    prose = DOC.read_text(encoding="utf-8").replace(block, "")
    assert "42 B" not in prose and "529" not in prose  # no figure outside the generated block contradicts it
