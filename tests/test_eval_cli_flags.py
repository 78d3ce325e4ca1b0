"""The `fusebench` command line reads flags exactly as written: no argparse abbreviations (an abbreviation once
turned `--model vllm` into `--model_args vllm` and ran the hf backend), and `fusebench eval` takes `--model` as
lm_eval does."""

from __future__ import annotations

import argparse

import pytest

import fusebench
from fusebench.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_parser_accepts_abbreviated_flags():
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 5
    assert [p.prog for p in parsers if p.allow_abbrev] == []
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["leaderboard", "--boa", "x"])
    assert exit_.value.code == 2


def test_eval_model_vllm_means_the_vllm_backend(tmp_path, tiny_neox_dir, capsys):
    # vLLM is not installed here: asking for it must say so (exit 2), never quietly run the hf backend
    code = main(["eval", str(tiny_neox_dir), "--tasks", "arc_easy", "--model", "vllm", "--limit", "2",
                 "--device", "cpu", "--workdir", str(tmp_path / "work"), "--output_path", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "vLLM" in err
    assert not (tmp_path / "out").exists()


def test_eval_model_names_an_unknown_backend_clearly(tmp_path, tiny_neox_dir, capsys):
    code = main(["eval", str(tiny_neox_dir), "--tasks", "arc_easy", "--model", "nonesuch", "--limit", "2",
                 "--workdir", str(tmp_path / "work")])
    assert code == 2 and "--model nonesuch" in capsys.readouterr().err


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fusebench {fusebench.__version__}"


def test_every_lm_eval_run_flag_is_passed_on():
    # lm_eval's `run` parser is the source of fusebench eval's flags; a flag added by a later lm_eval shows up
    # here until it is wired into fusebench/evaluate/harness.py (and is refused at run time meanwhile)
    from fusebench.evaluate.lm_eval_cli import HANDLED, lm_eval_dests

    assert set(lm_eval_dests()) - HANDLED == set()
    eval_parser = next(p for p in _parsers(build_parser()) if p.prog.endswith(" eval"))
    flags = {s for a in eval_parser._actions for s in a.option_strings}
    assert {"-t", "-L", "-o", "-s", "-b", "-f", "--model", "--system_instruction", "--config"} <= flags


def test_lm_eval_flags_that_suites_do_not_take_are_refused_not_ignored(tmp_path, tiny_neox_dir, capsys):
    # --suite runs each suite's own protocol; lm_eval's flags apply with --tasks, and are never dropped silently
    code = main(["eval", str(tiny_neox_dir), "--suite", "commonsense:arc_easy", "--num_fewshot", "3", "--limit", "1",
                 "--device", "cpu", "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "--num_fewshot" in err and "--tasks" in err
    assert not (tmp_path / "results").exists()
