"""The offline `ifeval` suite: prompts written for fusebench (tasks/ifeval/ifeval_offline.jsonl), scored by
lm-eval's own IFEval checkers, run end to end through real lm-eval on a tiny chat model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusebench.evaluate import ifeval_offline
from fusebench.evaluate.suites import SUITES

ROWS = ifeval_offline.rows()
BY_KEY = {row["key"]: row for row in ROWS}
REPO = Path(__file__).resolve().parents[1]


def _checker(instruction_id: str, kwargs: dict):
    from lm_eval.tasks.ifeval import instructions_registry

    instruction = instructions_registry.INSTRUCTION_DICT[instruction_id](instruction_id)
    instruction.build_description(**kwargs)
    return instruction


def _sorted(args: dict | None) -> dict:
    return {k: sorted(v) if isinstance(v, list) else v for k, v in (args or {}).items()}


def test_every_written_row_builds_lm_evals_checkers_with_exactly_its_kwargs():
    from lm_eval.tasks.ifeval import instructions_registry

    assert 60 <= len(ROWS) <= 100
    assert len(BY_KEY) == len(ROWS)  # keys are unique
    for row in ROWS:
        assert set(row) == {"key", "prompt", "instruction_id_list", "kwargs"} and row["prompt"].strip()
        ids = row["instruction_id_list"]
        assert len(ids) == len(row["kwargs"]) == len(set(ids)), row["key"]
        for i, (iid, kwargs) in enumerate(zip(ids, row["kwargs"])):
            assert iid in instructions_registry.INSTRUCTION_DICT and iid not in ifeval_offline.NEEDS_PUNKT
            assert all(v for v in kwargs.values()), (row["key"], iid)  # process_results drops falsy values
            # a checker given fewer arguments than it takes draws the rest at random: every row names them all
            assert _sorted(_checker(iid, kwargs).get_instruction_args()) == _sorted(kwargs), (row["key"], iid)
            assert not any(o in instructions_registry.INSTRUCTION_CONFLICTS[iid] for o in ids[i + 1:]), row["key"]
    families = ifeval_offline.instruction_families()
    assert len(families) >= 20 and min(families.values()) >= 1


LOREM_FR = ("Le dimanche matin, je me lève tard et je prends un café au lait sur le balcon. Ensuite je lis le journal "
            "pendant que les oiseaux chantent dans le jardin, puis je vais au marché acheter du pain frais.")

# key: (a response that follows every rule of the row, one that breaks at least one)
RESPONSES = {
    1007: ("Bread dries out because its starch crystallises again and the moisture moves to the crust.",
           "Bread dries out because its starch crystallises again, and the moisture moves to the crust."),
    1016: ("The first bicycles had no pedals.\n***\nPedals came in the 1860s.\n***\nChains arrived later.",
           "The first bicycles had no pedals.\n***\nPedals and chains came later."),
    1020: ("Ana left her umbrella on the bus.\n\nMeanwhile, the bus drove on.\n\nShe found it the next day.",
           "Ana left her umbrella on the bus.\n\nThe bus drove on.\n\nShe found it the next day."),
    1025: ("A wave rose, then another wave, and a third wave broke over the deck.",
           "A wave rose and the rain fell hard on the deck."),
    1034: (LOREM_FR, "On Sunday mornings I sleep late, drink coffee on the balcony and read the newspaper slowly."),
    1046: ("* tent\n* sleeping bag\n* torch\n* water\n* matches", "* tent\n* sleeping bag\n* torch"),
    1050: ("Raw dough can carry bacteria. My answer is no.", "Raw dough can carry bacteria, so probably not."),
    1058: ('```json\n{"name": "Veloria", "capital": "Port Ama", "population": 120000}\n```',
           'name: Veloria, capital: Port Ama'),
    1060: ("<<The Old Clock>>\nIt ticks all night.", "The Old Clock\nIt ticks all night."),
    1063: ("Crumb and Co.\n******\nThe Rising Loaf", "Crumb and Co. or The Rising Loaf"),
    1065: ("What are two reasons that cities plant trees along streets? Shade and cleaner air.",
           "Shade and cleaner air."),
    1070: ('"A violin sings high and warm."', "A violin sings high and warm."),
    1075: ("we sort old things so they can be made into new things and the earth stays clean",
           "We sort old things so they can be made into new things and the earth stays clean"),
    1073: ("<<Good Wheels>>\n* friendly staff\n* fair prices\n* quick repairs",
           "<<Good Wheels>>\n* friendly staff\n* fair prices"),
}


@pytest.mark.parametrize("key", sorted(RESPONSES))
def test_hand_written_responses_pass_and_violations_fail_under_lm_evals_scoring(key):
    from lm_eval.tasks.ifeval.utils import process_results

    follows, breaks = RESPONSES[key]
    good = process_results(BY_KEY[key], [follows])
    assert good["prompt_level_strict_acc"] and all(good["inst_level_strict_acc"]), key
    bad = process_results(BY_KEY[key], [breaks])
    assert not bad["prompt_level_strict_acc"] and not bad["prompt_level_loose_acc"], key


def test_importing_the_checkers_offline_attempts_no_download():
    """lm-eval's ifeval module downloads nltk's punkt_tab at import when it is missing; offline it must not try."""
    probe = (
        "import sys, nltk\n"
        "try:\n    nltk.data.find('tokenizers/punkt_tab'); print('HAVE_PUNKT')\nexcept LookupError: pass\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append(e) if e in ('socket.getaddrinfo', 'socket.connect') else None)\n"
        "download = nltk.download\n"
        "from fusebench.evaluate.ifeval_offline import import_checkers_offline\n"
        "import_checkers_offline()\n"
        "import lm_eval.tasks.ifeval.utils\n"
        "assert nltk.download is download\n"
        "print('NETWORK', seen)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    if "HAVE_PUNKT" in out.stdout:
        pytest.skip("punkt_tab is installed here, so lm-eval never downloads it")
    assert "NETWORK []" in out.stdout and "Downloaded punkt_tab" not in out.stdout
    assert "Error loading punkt_tab" not in out.stderr


def test_the_suite_and_docs_say_the_prompts_are_written_here_with_their_counts():
    families = ifeval_offline.instruction_families()
    description = SUITES["ifeval"].description
    for text in (description, (REPO / "docs" / "EVALUATION.md").read_text()):
        assert f"{len(ROWS)} prompts written for fusebench" in text
        assert f"{len(families)} of IFEval's instruction types" in text
        assert "not comparable to published IFEval" in text and "google/IFEval" in text


@pytest.fixture(scope="module")
def tiny_chat_model_2k(tmp_path_factory):
    from chat_models import build_tiny_chat_model

    # lm-eval's ifeval asks for up to 1280 new tokens: the prompt and the answer need a longer context than 512
    return build_tiny_chat_model(tmp_path_factory.mktemp("chat_model_2k"), max_positions=2048)


def test_ifeval_offline_runs_end_to_end_through_lm_eval_on_a_chat_model(tmp_path, tiny_chat_model_2k, capsys):
    from fusebench.cli import main

    assert main(["eval", str(tiny_chat_model_2k), "--suite", "ifeval", "--limit", "3", "--workdir",
                 str(tmp_path / "w"), "--results", str(tmp_path / "r"), "--device", "cpu"]) == 0
    results_file = next((tmp_path / "r").rglob("ifeval.json"))
    metrics = json.loads(results_file.read_text())["results"]["ifeval_offline"]
    for name in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                 "inst_level_loose_acc"):
        assert 0.0 <= metrics[f"{name},none"] <= 1.0
    manifest = json.loads(results_file.with_name("ifeval.manifest.json").read_text())
    data = manifest["tasks"]["ifeval"]["data"]
    assert Path(data["path"]) == ifeval_offline.PROMPTS and "not IFEval's prompts" in data["source"]
    assert manifest["tasks"]["ifeval"]["dataset"] is None  # no hub dataset read
