"""Suite selection, the offline data conversions and the BBH rebuild, without running a model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fusebench.errors import FusebenchError
from fusebench.evaluate.suites import SUITES, SuiteContext, parse_suites, plan_suite

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def _bbh_mc_utils():
    spec = importlib.util.spec_from_file_location("bbh_mc_utils", TASKS / "bbh_mc" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_suite_lists_the_suites():
    with pytest.raises(FusebenchError) as err:
        parse_suites("commonsense,mmlu")
    assert "'mmlu'" in str(err.value) and all(name in str(err.value) for name in SUITES)


def test_unknown_task_lists_the_suites_tasks(tmp_path):
    with pytest.raises(FusebenchError) as err:
        plan_suite("commonsense", SuiteContext(tmp_path), ("arc_medium",))
    assert "arc_medium" in str(err.value) and "hellaswag" in str(err.value)


def test_suite_task_syntax_picks_tasks():
    assert parse_suites("bbh:navigate,bbh:snarks,commonsense") == {"bbh": ("navigate", "snarks"),
                                                                     "commonsense": None}
    assert parse_suites("bbh:navigate,bbh") == {"bbh": None}


def test_online_request_while_offline_names_the_offline_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FusebenchError, match="arc_easy_offline"):
        plan_suite("commonsense", SuiteContext(tmp_path, online=True))


def test_offline_commonsense_renders_lm_eval_tasks_over_packaged_data(tmp_path):
    from lm_eval.tasks import TaskManager

    plan = plan_suite("commonsense", SuiteContext(tmp_path))
    assert plan.tasks["arc_easy"] == "arc_easy_offline"
    manager = TaskManager(include_path=[str(p) for p in plan.include_paths], include_defaults=False)
    tasks = manager.load(["arc_easy_offline", "boolq_offline"])["tasks"]
    docs = {name: list(task.eval_docs) for name, task in tasks.items()}
    assert len(docs["arc_easy_offline"]) == 2376  # ARC-Easy test split, as lm-eval scores it online
    assert len(docs["boolq_offline"]) == 3270  # BoolQ validation
    arc = tasks["arc_easy_offline"]
    first = docs["arc_easy_offline"][0]
    assert arc.doc_to_text(first).startswith("Question: ") and arc.doc_to_choice(first)[arc.doc_to_target(first)]
    boolq = tasks["boolq_offline"]
    assert {boolq.doc_to_target(d) for d in docs["boolq_offline"][:50]} == {0, 1}


def test_offline_bbh_has_27_tasks_in_bbh_format(tmp_path):
    from fusebench.evaluate.bbh_offline import BBH_TASKS, bbh_items

    assert len(BBH_TASKS) == 27
    date = bbh_items("date_understanding")
    assert len(date) == 250 and "\nOptions:\n(A) " in date[0]["input"] and date[0]["target"][0] == "("
    hyper = bbh_items("hyperbaton")[0]
    assert hyper["input"].startswith("Which sentence has the correct adjective order:\nOptions:\n(A) ")
    counting = bbh_items("object_counting")[0]
    assert counting["target"].isdigit()


@pytest.mark.parametrize("task", ["boolean_expressions", "multistep_arithmetic_two", "web_of_lies"])
def test_generated_bbh_tasks_are_seeded_and_answer_correctly(task):
    from fusebench.evaluate.bbh_offline import bbh_items

    items = bbh_items(task)
    assert items == bbh_items(task)  # same seed, same items
    for item in items[:50]:
        if task == "web_of_lies":  # recompute the chain of truth-tellers independently
            sentences = item["input"].removeprefix("Question: ").split(". ")
            truth = "tells the truth" in sentences[0]
            for s in sentences[1:-1]:
                truth = truth if s.endswith("tells the truth") else not truth
            assert item["target"] == ("Yes" if truth else "No")
        else:
            assert item["target"] == str(eval(item["input"].rsplit(" ", 1)[0]))


def test_every_offline_bbh_mc_item_has_its_gold_among_the_choices(tmp_path):
    from fusebench.evaluate.bbh_offline import write_bbh_jsonl

    utils = _bbh_mc_utils()
    paths = write_bbh_jsonl(tmp_path, utils.MC_TASKS)
    for task, path in paths.items():
        for line in path.read_text().splitlines():
            item = json.loads(line)
            mc = utils.choices_and_gold(item)
            assert 2 <= len(mc["choices"]) <= 26 and 0 <= mc["gold"] < len(mc["choices"]), task
        assert len(utils._fewshot(task)) == 3


def test_bbh_mc_scores_option_text():
    utils = _bbh_mc_utils()
    item = {"input": "Which is bigger?\nOptions:\n(A) a mouse\n(B) an elephant", "target": "(B)"}
    assert utils.choices_and_gold(item) == {"choices": ["a mouse", "an elephant"], "gold": 1}
    assert utils.choices_and_gold({"input": "not True is", "target": "False"}) == {"choices": ["True", "False"],
                                                                                  "gold": 1}
