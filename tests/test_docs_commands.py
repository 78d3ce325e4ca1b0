"""Every `fusebench …` command line in README.md and in `--help`'s examples runs, against the shipped recipes.

A command is executed in its own form (same subcommand, recipe and flags) with what would take hours made small:
a `run` of a recipe needing the hub or hours of training runs its first corpus stage (`--only`) — of the smoke
recipe when the recipe's data is on the hub — and the same arguments go through `plan`, which builds the whole
graph; evaluations score a tiny model on 2 documents. Anything written goes under tmp_path. A README line this file
cannot adapt fails the test, so a new example gets run too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_RECIPES = ("smoke.yaml", "tiny.yaml", "tiny_world.yaml")  # their corpora are generated, no hub needed


def readme_commands() -> list[list[str]]:
    """The `fusebench` command lines of README.md's code blocks, comments cut, as argv after `fusebench`."""
    text, out = (ROOT / "README.md").read_text(), []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            match = re.search(r"(?:^|\s|/)fusebench (.*)", line)
            if match:
                out.append(shlex.split(match.group(1), comments=True))
    return out


def help_examples() -> list[list[str]]:
    """The overrides `fusebench run --help` and `plan --help` give as examples ("e.g. train.lr=2e-5 …")."""
    out = []
    for command in ("run", "plan"):
        proc = subprocess.run([sys.executable, "-m", "fusebench.cli", command, "--help"], capture_output=True,
                              text=True, timeout=60, env=_env())
        assert proc.returncode == 0, proc.stderr
        flat = " ".join(proc.stdout.split())
        for example in re.findall(r"e\.g\. ((?:\S+=\S+ ?)+)", flat):
            out.append([command, "recipes/paper.yaml", *example.split()])
    assert out, "the --help texts lost their override example"
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory, unigram_tokenizer_dir) -> Path:
    """A tiny Llama with a 2048-token context (the packaged suites' prompts are ~1k tokens)."""
    from transformers import AutoTokenizer

    from fusebench.models.build import ModelSize, build_model

    out = tmp_path_factory.mktemp("doc_model")
    tok = AutoTokenizer.from_pretrained(str(unigram_tokenizer_dir))
    build_model("llama", len(tok), ModelSize(hidden=32, layers=1, heads=4, max_positions=2048), tok.bos_token_id,
                tok.eos_token_id, 0).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _recipe_args(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(recipe, overrides, flags) of a run / plan command line; its own --workdir is left out (tmp's is used)."""
    overrides, flags, rest = [], [], iter(argv[2:])
    for arg in rest:
        if arg == "--workdir":
            next(rest)
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        else:
            flags.append(arg)
    return argv[1], overrides, flags


def _first_corpus(recipe: Path) -> str:
    from fusebench.pipeline.recipe import load_recipe

    return next(iter(load_recipe(recipe).corpora))


def adapt(argv: list[str], tmp: Path, model: Path) -> list[tuple[list[str], Path]]:
    """The small form(s) of one documented command: [(argv, cwd)]."""
    command, work = argv[0], str(tmp / "work")
    if command == "plan":
        return [([*argv, "--workdir", work], ROOT)]
    if command == "run":
        recipe, overrides, flags = _recipe_args(argv)
        runnable = recipe if Path(recipe).name in OFFLINE_RECIPES else "recipes/smoke.yaml"
        only = f"corpus:{_first_corpus(ROOT / runnable)}"
        return [(["plan", str(ROOT / recipe), *overrides, "--workdir", work], ROOT),
                # cwd tmp: `--publish` writes into the current directory's results/ and reports/
                (["run", str(ROOT / runnable), *overrides, *flags, "--only", only, "--workdir", work], tmp)]
    if command == "align":
        return [(argv, ROOT)]
    if command == "eval":
        out = ["eval", str(model), *argv[2:]]
        for i, arg in enumerate(out):
            if arg == "--limit":
                out[i + 1] = "0.01" if float(out[i + 1]) < 1 else "2"
            if arg == "--corpus":
                corpus = tmp / "corpus"
                corpus.mkdir(exist_ok=True)
                (corpus / "test.jsonl").write_text("".join(json.dumps({"text": f"Line {i} of a test."}) + "\n"
                                                           for i in range(4)))
                out[i + 1] = f"{out[i + 1].split('=')[0]}={corpus}"
        return [(out, tmp)]
    if command == "report":  # the paper's reported numbers (results/reported/), rendered into tmp
        return [([*argv, "--results", str(ROOT / "results"), "--out", str(tmp / "reports")], ROOT)]
    if command == "leaderboard" and argv[1:2] == ["add"]:
        board = tmp / "board"
        shutil.copytree(ROOT / "results" / "leaderboard", board)
        return [(["leaderboard", "add", str(model), *argv[3:], "--board", str(board), "--out", str(tmp / "out"),
                  "--workdir", work], ROOT)]
    if command == "bench":
        return []  # tests/test_bench.py runs `fusebench bench --json --quick` (a full bench takes minutes)
    raise AssertionError(f"README/--help command `fusebench {shlex.join(argv)}` has no small form here: add one")


COMMANDS = readme_commands()


@pytest.mark.parametrize("argv", COMMANDS + help_examples(), ids=lambda a: shlex.join(a)[:70])
def test_documented_command_runs(argv, tmp_path, long_context_model):
    for cmd, cwd in adapt(argv, tmp_path, long_context_model):
        proc = subprocess.run([sys.executable, "-m", "fusebench.cli", *cmd], cwd=cwd, env=_env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"`fusebench {shlex.join(cmd)}` (for `{shlex.join(argv)}`) failed:\n" \
                                     f"{proc.stderr[-2500:]}"
        if "train.lr=2e-5" in cmd and cmd[0] == "plan":  # the override reaches every trained model, and says so
            assert re.search(r"train\.\* set for every trained model \(.+\): lr=2e-5", proc.stdout), proc.stdout

