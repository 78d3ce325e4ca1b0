"""Stable model links: after a run, `<workdir>/models/<name>` points at each model's cached artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fusebench.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


def _run(workdir: Path, *overrides: str) -> int:
    return main(["run", str(SMOKE), *overrides, "--only", "model:target", "--workdir", str(workdir),
                 "--results", str(workdir / "results"), "--reports", str(workdir / "reports")])


def test_models_are_linked_by_name_the_log_says_so_and_the_link_follows_a_changed_recipe(tmp_path):
    workdir = tmp_path / "w"
    assert _run(workdir, "models.target.train.steps=2") == 0
    link = workdir / "models" / "target"
    (first,) = [p for p in workdir.glob("cache/model/target-*") if p.is_dir()]
    assert link.is_symlink() and link.resolve() == first.resolve()
    assert (link / "model.safetensors").is_file()
    # the stage record says what the recipe cannot pin (issue 14): threads, CPU kernels, library versions
    env = json.loads((link / ".stage.json").read_text())["environment"]
    assert env["torch_threads"] >= 1 and env["cpu"]["torch_capability"] and env["packages"]["transformers"]
    assert not Path(link.readlink()).is_absolute()  # relative: a moved workdir keeps working
    (log_file,) = (workdir / "logs").glob("run-*.log")
    assert f"models linked under {workdir / 'models'}: target" in log_file.read_text()

    assert _run(workdir, "models.target.train.steps=3") == 0  # another key: a new cache dir, the same link name
    (second,) = [p for p in workdir.glob("cache/model/target-*") if p.is_dir() and p != first]
    assert link.resolve() == second.resolve()

    moved = Path(shutil.move(str(workdir), tmp_path / "moved"))
    assert (moved / "models" / "target").resolve() == (moved / "cache" / "model" / second.name).resolve()
