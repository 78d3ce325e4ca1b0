"""IFEval through lm-eval (`--suite ifeval`): google/IFEval online; offline, prompts written for fusebench
(tests/test_ifeval_offline.py); rule-based scoring either way."""

from __future__ import annotations

import json

import pytest

from fusebench.errors import FusebenchError
from fusebench.evaluate.ifeval_offline import PROMPTS
from fusebench.evaluate.suites import SuiteContext, plan_suite, task_datasets, task_yaml_paths


def test_ifeval_with_packaged_data_runs_the_written_prompts_under_their_own_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for original_names in (False, True):  # `--tasks ifeval` too: the written prompts are never lm-eval's `ifeval`
        ctx = SuiteContext(tmp_path / str(original_names), original_names=original_names)
        plan = plan_suite("ifeval", ctx)
        assert plan.tasks == {"ifeval": "ifeval_offline"} and plan.chat_template
        assert task_datasets(plan) == {}  # no hub dataset
        assert plan.data["ifeval"].path == PROMPTS and "not IFEval's prompts" in plan.data["ifeval"].source
        text = task_yaml_paths(plan)["ifeval_offline"].read_text()
        assert f"test: {json.dumps(str(PROMPTS))}" in text and "/ifeval/ifeval.yaml" in text


def test_ifeval_online_while_the_hub_is_off_names_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FusebenchError, match="google/IFEval is not in the local datasets cache"):
        plan_suite("ifeval", SuiteContext(tmp_path, online=True))


def test_ifeval_online_plan_is_lm_evals_own_task_in_the_chat_template(tmp_path):
    plan = plan_suite("ifeval", SuiteContext(tmp_path, online=True), refuse_offline_hub=False)
    assert plan.tasks == {"ifeval": "ifeval"} and plan.chat_template
    assert task_datasets(plan) == {"ifeval": "google/IFEval"}
    assert task_yaml_paths(plan)["ifeval"].read_text().startswith("# ifeval as its YAML defines it")


def test_ifeval_rules_score_responses_with_the_installed_checkers():
    # lm-eval's own process_results: needs immutabledict (registry) and langdetect (response language)
    from lm_eval.tasks.ifeval.utils import process_results

    doc = {"key": 1, "prompt": "Answer in English, in lowercase, without commas.",
           "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase",
                                   "language:response_language"],
           "kwargs": [{}, {}, {"language": "en"}]}
    good = process_results(doc, ["the weather today is sunny and warm and the sky is clear"])
    assert good["prompt_level_strict_acc"] and good["inst_level_strict_acc"] == [True, True, True]
    bad = process_results(doc, ["Le temps est ensoleillé, chaud et le ciel est dégagé aujourd'hui"])
    assert not bad["prompt_level_strict_acc"] and bad["inst_level_strict_acc"] == [False, False, False]
