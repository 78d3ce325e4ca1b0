"""`fusebench eval` end to end on real tiny models and real lm-eval, offline: files written, manifests, caching."""

from __future__ import annotations

import json

import pytest

from fusebench.errors import FusebenchError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, stdlib_texts):
    out = tmp_path_factory.mktemp("corpus")
    (out / "test.jsonl").write_text("".join(json.dumps({"text": t[:1500]}) + "\n" for t in stdlib_texts[:3]))
    return out


def test_cli_eval_writes_results_and_manifest_per_suite(tmp_path, tiny_neox_dir, corpus, capsys):
    from fusebench.cli import main

    # (BBH chain of thought needs a longer context than this model's 512: tests/test_eval_protocol.py)
    argv = [str(tiny_neox_dir), "--suite", "commonsense:arc_easy,commonsense:boolq,bbh_mc:navigate,perplexity", "--corpus", f"code={corpus}", "--limit", "2", "--workdir",
            str(tmp_path / "w"), "--results", str(tmp_path / "results"), "--name", "tiny", "--run-id", "r1",
            "--truncate_long_prompts"]  # BoolQ passages are longer than this model's 512 tokens
    assert main(["eval", *argv]) == 0
    out_dir = tmp_path / "results" / "r1" / "tiny"
    for suite in ("commonsense", "bbh_mc", "perplexity"):
        results = json.loads((out_dir / f"{suite}.json").read_text())
        manifest = json.loads((out_dir / f"{suite}.manifest.json").read_text())
        assert results["results"] and "samples" not in results
        # the provenance lm_eval would write for these settings (issue 22): the batch size and device used
        assert (results["config"]["batch_size"], results["config"]["device"]) == (8, "cpu"), suite
        assert manifest["model"]["weights_sha256"] and manifest["packages"]["lm_eval"] == "0.4.13"
        assert manifest["seeds"]["fewshot"] == 1234 and manifest["limit"] == 2
        assert manifest["environment"]["torch_threads"] >= 1 and manifest["environment"]["cpu"]["torch_capability"]
        assert all(s["stderr"] is not None for s in manifest["scores"]), suite  # every score has its stderr
        for task in manifest["tasks"].values():
            assert task["version"] is not None and len(task["data"]["sha256"]) == 64
    commonsense = json.loads((out_dir / "commonsense.manifest.json").read_text())
    assert commonsense["prompts_cut"]["boolq_offline"] >= 1 and "arc_easy_offline" not in commonsense["prompts_cut"]
    assert commonsense["tasks"]["arc_easy"]["data"]["split"] == "test"
    assert {s["metric"] for s in commonsense["scores"] if s["task"] == "arc_easy"} == {"acc", "acc_norm"}
    assert "bits_per_byte" in capsys.readouterr().out


def test_repeated_evaluation_is_answered_from_the_request_cache(tmp_path, tiny_neox_dir, corpus):
    from fusebench.evaluate.api import evaluate_model

    kwargs = dict(corpora={"code": corpus}, limit=2, workdir=tmp_path / "w", results_dir=tmp_path / "r")
    first = evaluate_model(tiny_neox_dir, ["commonsense:arc_easy", "perplexity"], **kwargs)
    caches = list((tmp_path / "w" / "lm_cache").rglob("*.db"))
    assert len(caches) == 2 and all(c.stat().st_size > 0 for c in caches)
    again = evaluate_model(tiny_neox_dir, ["commonsense:arc_easy", "perplexity"], **kwargs)
    assert again.scores == first.scores


def test_fusebench_ensemble_is_scored_like_any_model(tmp_path, tiny_neox_pair, corpus):
    from fusebench.ensemble import save_ensemble
    from fusebench.evaluate.api import evaluate_model

    ens = save_ensemble(list(tiny_neox_pair), None, tmp_path / "ens")
    result = evaluate_model(ens, ["perplexity"], corpora={"code": corpus}, workdir=tmp_path / "w",
                            results_dir=tmp_path / "r")
    members = [evaluate_model(m, ["perplexity"], corpora={"code": corpus}, workdir=tmp_path / "w",
                              results_dir=tmp_path / "r").score("code", "bits_per_byte").value
               for m in tiny_neox_pair]
    bpb = result.score("code", "bits_per_byte").value
    # averaging probabilities never does worse than the average member (log is concave)
    assert bpb <= sum(members) / 2 + 1e-6
    assert result.model_name == "ens"


@pytest.mark.parametrize("model, message", [
    ("/nonexistent/model", "neither an existing directory"),
    ("someone/some-model", "HF_HUB_OFFLINE"),
])
def test_a_model_that_cannot_load_is_a_clear_error(tmp_path, model, message):
    from fusebench.evaluate.api import evaluate_model

    with pytest.raises(FusebenchError, match=message):
        evaluate_model(model, ["commonsense:arc_easy"], workdir=tmp_path, limit=1)


def test_a_model_directory_without_safetensors_is_refused(tmp_path, tiny_neox_dir):
    import shutil

    from fusebench.models.load import load_causal_lm

    broken = tmp_path / "model"
    shutil.copytree(tiny_neox_dir, broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FusebenchError, match="safetensors"):
        load_causal_lm(broken)


def test_loading_a_plain_model_does_not_import_the_ensemble_code(tiny_neox_dir):
    import subprocess
    import sys

    code = ("import sys; from fusebench.models.load import load_causal_lm; load_causal_lm(sys.argv[1], 'cpu'); "
            "print('fusebench.ensemble' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_neox_dir)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
