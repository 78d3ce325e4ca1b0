"""The results store: reading real lm-eval output and the reported set into one tidy frame, append-only writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fusebench.checksums import seal
from fusebench.errors import FusebenchError
from fusebench.report.store import COLUMNS, Evaluation, ResultsStore

REPO = Path(__file__).resolve().parents[1]
REPORTED = REPO / "results" / "reported"


@pytest.fixture(scope="module")
def real_lm_eval_results(tmp_path_factory, tiny_llama_dir) -> dict:
    """lm-eval 0.4.13 itself, run once on a tiny Llama: a rolling-loglikelihood task and a multiple-choice task
    whose documents are written here (the evaluation layer's task YAMLs are exercised by its own tests)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    root = tmp_path_factory.mktemp("lm_eval_tasks")
    (root / "ppl.jsonl").write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x + {i}\n"}) + "\n"
                                            for i in range(3)))
    (root / "mc.jsonl").write_text("".join(json.dumps({"q": f"{i} plus one is", "choices": [str(i + 1), str(i)],
                                                       "label": 0}) + "\n" for i in range(4)))
    common = "dataset_path: json\ntest_split: test\n"
    (root / "ppl.yaml").write_text(
        f"task: tiny_bpb_code\n{common}dataset_kwargs:\n  data_files:\n    test: {root / 'ppl.jsonl'}\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")
    (root / "mc.yaml").write_text(
        f"task: tiny_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {root / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_llama_dir},dtype=float32",
                                      tasks=["tiny_bpb_code", "tiny_mc"], task_manager=TaskManager(include_path=str(root)),
                                      device="cpu", batch_size=4)
    results.pop("samples", None)
    # exactly what the evaluation layer stores: lm-eval's dict through lm-eval's own JSON fallback
    return json.loads(json.dumps(results, default=handle_non_serializable))


def test_real_lm_eval_output_becomes_tidy_rows_in_paper_units(tmp_path, real_lm_eval_results):
    store = ResultsStore(tmp_path)
    store.add_run("tiny-seed0", [Evaluation("tiny-target", "mixed", real_lm_eval_results, {"seed": 0})],
                  roles={"target": "tiny-target"})
    frame = store.frame()
    assert list(frame.columns) == COLUMNS
    raw = real_lm_eval_results["results"]
    bpb = frame[(frame["task"] == "tiny_bpb_code") & (frame["metric"] == "bits_per_byte")].iloc[0]
    assert bpb["value"] == pytest.approx(raw["tiny_bpb_code"]["bits_per_byte,none"])   # not rescaled
    assert math.isnan(bpb["stderr"])                      # lm-eval writes "N/A" for it
    assert not bpb["higher_is_better"]                    # taken from lm-eval's own higher_is_better
    acc = frame[(frame["task"] == "tiny_mc") & (frame["metric"] == "acc")].iloc[0]
    assert acc["value"] == pytest.approx(100 * raw["tiny_mc"]["acc,none"])                # percent, as the paper
    assert acc["stderr"] == pytest.approx(100 * raw["tiny_mc"]["acc_stderr,none"])
    assert (acc["role"], acc["provenance"], acc["run_id"]) == ("target", "reproduced", "tiny-seed0")
    assert acc["source_file"].endswith("tiny-seed0/tiny-target/mixed.json")
    assert set(frame["metric"]) == {"acc", "acc_norm", "bits_per_byte", "word_perplexity"}


def test_manifest_role_wins_over_run_json_and_plural_roles_are_read(tmp_path):
    store = ResultsStore(tmp_path)
    res = {"results": {"t": {"acc,none": 0.5, "acc_stderr,none": 0.1}}, "higher_is_better": {"t": {"acc": True}}}
    store.add_run("r", [Evaluation("a", "s", res, {"role": "fused", "method": "fusellm"}), Evaluation("b", "s", res)],
                  roles={"sources": ["a", "b"]})
    roles = dict(zip(store.frame()["model"], store.frame()["role"]))
    assert roles == {"a": "fused", "b": "source"}


def test_group_aggregates_are_flagged_so_tables_recompute_averages(tmp_path):
    res = {"results": {"bbh": {"exact_match,get-answer": 0.3}, "bbh_x": {"exact_match,get-answer": 0.2},
                       "bbh_y": {"exact_match,get-answer": 0.4}},
           "groups": {"bbh": {"exact_match,get-answer": 0.3}}, "group_subtasks": {"bbh": ["bbh_x", "bbh_y"]}}
    store = ResultsStore(tmp_path)
    store.add_run("r", [Evaluation("m", "bbh", res)])
    frame = store.frame().set_index("task")
    assert bool(frame.loc["bbh", "is_average"]) and not frame.loc["bbh_x", "is_average"]
    assert frame.loc["bbh_x", "filter"] == "get-answer"


def test_add_run_refuses_an_existing_run_id_and_the_reported_set(tmp_path):
    store = ResultsStore(tmp_path)
    res = {"results": {"t": {"acc,none": 0.5}}}
    store.add_run("run1", [Evaluation("m", "s", res)])
    before = (tmp_path / "run1" / "m" / "s.json").read_text()
    with pytest.raises(FusebenchError, match="already exists"):
        store.add_run("run1", [Evaluation("m", "s", {"results": {"t": {"acc,none": 0.9}}})])
    assert (tmp_path / "run1" / "m" / "s.json").read_text() == before
    with pytest.raises(FusebenchError, match="reserved"):
        store.add_run("reported", [Evaluation("m", "s", res)])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())   # no staging directory left behind


def test_reported_set_is_read_with_paper_digits_roles_and_provenance():
    frame = ResultsStore(REPO / "results").frame()
    reported = frame[frame["provenance"] == "reported"]
    fuse_avg = reported[(reported["table"] == "table1_bbh") & (reported["model"] == "FuseLLM-7B")
                        & reported["is_average"]]
    assert fuse_avg["value"].tolist() == [41.75]
    row = reported[(reported["table"] == "table1_bbh") & (reported["row_label"] == "Boolean Expressions")
                   & (reported["model"] == "OpenLLaMA-7B")].iloc[0]
    assert (row["printed"], row["task"], row["role"], row["run_id"]) == ("74.40", "boolean_expressions", "source",
                                                                         "reported")
    manifest = json.loads((REPORTED / "manifest.json").read_text())
    assert manifest["provenance"] == "reported" and "2401.10491" in manifest["citation"]


def test_corrupt_results_file_is_a_user_error_naming_the_file(tmp_path):
    (tmp_path / "run" / "m").mkdir(parents=True)
    (tmp_path / "run" / "m" / "bbh.json").write_text("{not json")
    seal(tmp_path / "run")   # sealed as it is: the file itself is broken
    with pytest.raises(FusebenchError, match="bbh.json is not valid JSON"):
        ResultsStore(tmp_path).frame()
