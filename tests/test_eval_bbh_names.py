"""BBH as fusebench runs it differs from lm-eval's `bbh_cot_fewshot` in its generation length (256 new tokens), so
under `fusebench eval --tasks` its tasks carry their own names; its suite score is lm-eval's group aggregate
(weighted by task size, as `bbh_cot_fewshot`'s group config says), with the unweighted mean beside it, labelled."""

from __future__ import annotations

import pytest

from fusebench.evaluate.suites import BBH_MAX_GEN_TOKS, SuiteContext, plan_suite


def _indexed_config(plan, task: str) -> dict:
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = TaskManager(include_path=[str(p) for p in plan.include_paths], include_defaults=False)
    return load_yaml(manager.task_index[task].yaml_path, resolve_func=False)


@pytest.mark.parametrize("online", [False, True])
def test_bbh_task_under_lm_eval_names_is_renamed_for_its_changed_generation(tmp_path, online):
    ctx = SuiteContext(tmp_path, online=online, original_names=True)
    plan = plan_suite("bbh", ctx, ("navigate",), refuse_offline_hub=False)
    (task,) = plan.tasks.values()
    assert task == f"bbh_cot_fewshot_navigate_maxgen{BBH_MAX_GEN_TOKS}"
    config = _indexed_config(plan, task)
    assert config["task"] == task and config["generation_kwargs"]["max_gen_toks"] == BBH_MAX_GEN_TOKS


def test_tasks_that_change_only_their_data_source_keep_lm_evals_name(tmp_path):
    plan = plan_suite("commonsense", SuiteContext(tmp_path, original_names=True), ("arc_easy",))
    assert plan.tasks == {"arc_easy": "arc_easy"}


def test_bbh_suite_score_is_lm_evals_size_weighted_aggregate_and_the_unweighted_mean(tmp_path):
    from fusebench.evaluate.api import tidy_scores

    plan = plan_suite("bbh", SuiteContext(tmp_path), ("navigate", "snarks"))
    nav, snarks = plan.tasks["navigate"], plan.tasks["snarks"]
    results = {"results": {
        nav: {"exact_match,get-answer": 0.5, "exact_match_stderr,get-answer": 0.05, "sample_len": 100},
        snarks: {"exact_match,get-answer": 0.8, "exact_match_stderr,get-answer": 0.1, "sample_len": 25}}}
    scores = {(s.task, s.metric): s for s in tidy_scores(results, plan, "bbh")}
    # lm-eval: sum(score_i * n_i) / sum(n_i) over tasks, pooled stderr
    assert scores[("bbh", "exact_match")].value == pytest.approx((0.5 * 100 + 0.8 * 25) / 125)
    assert scores[("bbh", "exact_match")].stderr == pytest.approx(
        ((99 * 0.05**2 * 100 + 24 * 0.1**2 * 25) / (125 - 2) / 125) ** 0.5)
    assert scores[("bbh", "unweighted_mean_exact_match")].value == pytest.approx(0.65)


def test_whole_bbh_suite_under_lm_eval_names_is_a_group_with_lm_evals_aggregate(tmp_path):
    import yaml
    from lm_eval.tasks import TaskManager

    from fusebench.evaluate import offline_data as od
    from fusebench.evaluate.harness import resolve_tasks

    resolved = resolve_tasks(["bbh"], SuiteContext(tmp_path, original_names=True))
    group = f"bbh_cot_fewshot_maxgen{BBH_MAX_GEN_TOKS}"
    assert resolved.tasks == [group] and len(resolved.data) == 27  # lm-eval reports the group and its tasks
    manager = TaskManager(include_path=[str(p) for p in resolved.include_paths], include_defaults=False)
    loaded = manager.load([group])
    assert set(loaded["groups"]) == {group} and len(loaded["tasks"]) == 27
    assert all(t.endswith(f"_maxgen{BBH_MAX_GEN_TOKS}") for t in loaded["tasks"])
    lm_eval_group = yaml.safe_load((od.lm_eval_tasks_dir() / "bbh" / "cot_fewshot" / "_bbh_cot_fewshot.yaml")
                                   .read_text())
    (aggregate,) = loaded["groups"][group].aggregate_metric_list
    assert (aggregate.metric, aggregate.weight_by_size) == ("exact_match", True)
    assert lm_eval_group["aggregate_metric_list"][0]["weight_by_size"] is True
