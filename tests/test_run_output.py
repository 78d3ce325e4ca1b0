"""What `fusebench run` prints: at most one progress bar per stage, each library warning once; the rest (every
warning, each training stage's loss curve) goes to logs/run-*.log. Run on the real smoke recipe, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LM_EVAL_WARNING = "`pretrained` model kwarg is not of type `str`"


def test_a_run_prints_one_bar_per_stage_and_each_warning_once_and_logs_the_rest(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    work = tmp_path / "w"
    done = subprocess.run([sys.executable, "-m", "fusebench.cli", "run", str(REPO / "recipes" / "smoke.yaml"),
                           "--workdir", str(work), "--results", str(tmp_path / "results"),
                           "--reports", str(tmp_path / "reports")],
                          env=env, cwd=tmp_path, capture_output=True, timeout=3000)   # bytes: keep \r as is
    console = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, console[-3000:]
    lines = [line for line in console.split("\n") if line.strip()]   # a bar redrawn with \r stays one line
    bars = [line for line in lines if re.search(r"\d+%\|", line)]
    stages = re.findall(r"\] (\S+): done in", console)
    assert stages, console[-2000:]
    # at most one bar per stage that ran
    assert len(bars) <= len(stages), "\n".join(bars[:40])
    assert console.count(LM_EVAL_WARNING) <= 1
    (log_file,) = (work / "logs").glob("run-*.log")
    logged = log_file.read_text()
    assert logged.count(LM_EVAL_WARNING) >= 2                      # every evaluation's warning is kept there
    for sid in (s for s in stages if s.startswith("model:") and not s.startswith("model:merge")):
        if (Path(next(work.glob(f"cache/model/{sid.split(':', 1)[1]}-*"))) / "train_log.jsonl").exists():
            assert re.search(re.escape(sid.split(":", 1)[1]) + r".* step \d+/\d+ loss \d", logged), sid
