"""IFEval through lm-eval (`--suite ifeval`): hub data only, refused offline in one paragraph, rule-based scoring."""

from __future__ import annotations

import pytest

from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.evaluate.suites import SuiteContext, plan_suite, task_datasets, task_yaml_paths


def test_ifeval_with_packaged_data_is_refused_in_one_paragraph_with_exit_2(capsys, tmp_path, tiny_neox_dir):
    assert main(["eval", str(tiny_neox_dir), "--suite", "ifeval", "--workdir", str(tmp_path / "w"),
                 "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "no registry package ships its 541 prompts" in err and "--data hub" in err
    assert not (tmp_path / "r").exists()


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
