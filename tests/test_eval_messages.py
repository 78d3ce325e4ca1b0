"""What `fusebench eval` and model loading tell a user who got something wrong: each message names a fix that exists
and applies (a flag the command has, a download tool that is installed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from fusebench.cli import main as fusebench_main
from fusebench.errors import FusebenchError


def test_eval_without_a_suite_or_corpus_says_what_to_pass(tmp_path, tiny_neox_dir, capsys):
    assert fusebench_main(["eval", str(tiny_neox_dir), "--workdir", str(tmp_path / "w"),
                           "--results", str(tmp_path / "r")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--corpus NAME=DIR" in err and "--suite" in err and "--tasks" in err
    assert "commonsense" in err and "Traceback" not in err                  # names suites that exist


def test_a_multiple_choice_prompt_too_long_is_not_told_to_generate_fewer_tokens(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.api import evaluate_model

    with pytest.raises(FusebenchError) as err:
        evaluate_model(tiny_neox_dir, ["commonsense:boolq"], limit=1, workdir=tmp_path, results_dir=tmp_path / "r")
    message = str(err.value)
    assert "context and continuation" in message and "--max_length" in message
    assert "max_gen_toks" not in message                      # scoring choices generates nothing


@pytest.mark.parametrize("where", ["hub", "load"])
def test_hub_errors_name_the_installed_download_command(monkeypatch, where):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert shutil.which("hf", path=str(Path(sys.executable).parent)) is not None    # what huggingface_hub installs
    with pytest.raises(FusebenchError) as err:
        if where == "hub":
            from fusebench.models.hub import resolve_pretrained

            resolve_pretrained("no-such-owner/no-such-model", revision="main")
        else:
            from fusebench.models.load import check_source

            check_source("no-such-owner/no-such-model")
    assert "hf download" in str(err.value)
    assert "huggingface-cli" not in str(err.value)
