"""Every name a user gives (recipe keys, `eval --name`, `leaderboard add --name`, ...) becomes a folder or file name
only after `fusebench.names` has accepted it; anything else is one paragraph naming where it came from, exit 2
(issue 18, "Names and bad input")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.names import check_name, name_problem

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"
BAD = ["../../x", "a/b", "a\\b", "..", ".hidden", "", "a\0b", "x" * 200, "white space", "new\nline"]


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("name", BAD)
def test_a_name_that_is_not_one_safe_path_component_is_refused(name):
    assert name_problem(name)
    with pytest.raises(FusebenchError, match="--name") as err:
        check_name(name, "--name")
    assert "\n" not in str(err.value).strip()           # one paragraph


@pytest.mark.parametrize("name", ["target", "src_neox", "SmolLM2-135M-Instruct", "pythia-1.4b", "a+b=c@d", "x" * 100])
def test_ordinary_names_are_accepted(name):
    assert name_problem(name) is None and check_name(name, "--name") == name


def _corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text(json.dumps({"text": "hello world, a short document."}) + "\n")
    return corpus


def test_eval_name_that_climbs_out_of_the_results_store_is_refused(capsys, tmp_path, tiny_llama_dir):
    """Before: the tiny model was scored and its results written to tmp_path/x, outside --results."""
    results = tmp_path / "a" / "results"
    _fails(capsys, ["eval", str(tiny_llama_dir), "--name", "../../x", "--corpus", f"c={_corpus(tmp_path)}",
                    "--workdir", str(tmp_path / "w"), "--results", str(results)],
           "--name '../../x'", "'/'", "letters, digits")
    assert not (tmp_path / "x").exists() and not (tmp_path / "a").exists()


@pytest.mark.parametrize("flag, value", [("--run-id", "../up"), ("--corpus", "../up=DIR")])
def test_eval_run_id_and_corpus_names_are_checked_too(capsys, tmp_path, flag, value):
    value = value.replace("DIR", str(_corpus(tmp_path)))
    _fails(capsys, ["eval", str(tmp_path / "no-model"), flag, value, "--workdir", str(tmp_path / "w"),
                    "--results", str(tmp_path / "r")], f"{flag} ", "'../up'", "letters, digits")


def test_leaderboard_add_name_that_climbs_out_is_refused_before_any_work(capsys, tmp_path, tiny_llama_dir):
    board = tmp_path / "board"
    board.mkdir()
    (board / "board.yaml").write_text((REPO / "results" / "leaderboard" / "board.yaml").read_text())
    _fails(capsys, ["leaderboard", "add", str(tiny_llama_dir), "--name", "../../x", "--board", str(board),
                    "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out")], "--name '../../x'", "'/'")
    assert not (tmp_path / "w").exists() and not (board / "entries").exists()


def _recipe(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    mutate(data)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _rename_model(data: dict, old: str, new: str) -> None:
    data["models"][new] = data["models"].pop(old)
    data["evaluate"]["models"] = [new if m == old else m for m in data["evaluate"]["models"]]


@pytest.mark.parametrize("where, mutate", [
    ("models key '../../x'", lambda d: _rename_model(d, "clm", "../../x")),
    ("corpora key '.hidden'", lambda d: d["corpora"].update({".hidden": d["corpora"]["legal"]})),
    ("tokenizers key 'a/b'", lambda d: d["tokenizers"].update({"a/b": d["tokenizers"]["sp"]})),
    ("name:", lambda d: d.update(name="../escape")),
])
def test_recipe_names_that_are_not_path_components_are_refused(capsys, tmp_path, where, mutate):
    recipe = _recipe(tmp_path, mutate)
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), where, "letters, digits")


def test_recipe_name_from_an_override_is_checked(capsys, tmp_path):
    _fails(capsys, ["plan", str(SMOKE), "name=../../x", "--workdir", str(tmp_path / "w")], "name: ", "'../../x'")


def test_a_board_task_name_that_climbs_out_is_refused(capsys, tmp_path):
    """A board's task names become rendered task files (<task>.yaml) under the workdir."""
    board = tmp_path / "board"
    board.mkdir()
    data = yaml.safe_load((REPO / "results" / "leaderboard" / "board.yaml").read_text())
    tasks = data["suites"]["perplexity"]["tasks"]
    tasks["../../x"] = tasks.pop(next(iter(tasks)))
    (board / "board.yaml").write_text(yaml.safe_dump(data))
    _fails(capsys, ["leaderboard", "--board", str(board), "--out", str(tmp_path / "out")],
           str(board / "board.yaml"), "'../../x'", "letters, digits")


@pytest.mark.parametrize("source", ["package:../../x==1", "package:x==../../1", "package:.x==1"])
def test_a_gguf_package_name_is_a_name_not_a_path(tmp_path, monkeypatch, source):
    """The package is unpacked into <cache>/packages/<name>-<version>: a name climbing out would write there."""
    from fusebench.models.gguf import resolve_gguf

    monkeypatch.setenv("FUSEBENCH_CACHE", str(tmp_path / "a" / "cache"))
    with pytest.raises(FusebenchError, match=r"gguf: .*letters, digits"):
        resolve_gguf(source)
    assert list(tmp_path.rglob("*")) == []


def test_a_model_name_that_is_another_models_seed_copy_is_refused(capsys, tmp_path):
    """With seeds, clm's seed-1 stages are `model:clm.s1`, `eval:clm.s1.<suite>` and its link models/clm.s1: a model
    named `clm.s1` would share them, and one of the two would silently be the other's artifact."""
    def mutate(d):
        d["seeds"] = [0, 1]
        d["models"]["clm.s1"] = {**d["models"]["clm"], "role": "expert"}
    _fails(capsys, ["plan", str(_recipe(tmp_path, mutate)), "--workdir", str(tmp_path / "w")],
           "'clm.s1'", "seed 1 of 'clm'")


@pytest.mark.parametrize("kwargs, says", [({"name": "../x"}, "--name"), ({"run_id": "../x"}, "--run-id"),
                                          ({"corpora": {"../x": "d"}}, "--corpus")])
def test_evaluate_model_checks_the_names_it_makes_folders_of(tmp_path, kwargs, says):
    """The library entry (recipes' eval stages, the leaderboard, scripts) checks too, not only the CLI."""
    from fusebench.evaluate.api import evaluate_model

    with pytest.raises(FusebenchError, match=f"{says}.*'../x'"):
        evaluate_model(tmp_path / "model", "perplexity", workdir=tmp_path / "w", results_dir=tmp_path / "r",
                       **{"corpora": {"c": tmp_path}, **kwargs})
    assert list(tmp_path.iterdir()) == []
