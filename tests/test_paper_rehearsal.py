"""The paper run, rehearsed (issue 11): `fusebench run recipes/paper.yaml`, offline, from an empty workdir, against
a private Hugging Face cache that serves the recipe's hub ids (tests/hubcache.py), under `accelerate launch
--num_processes 2` on CPU (gloo) with the repo's own accelerate configs.

Only sizes are overridden (steps, sequence length, batch, accumulation, checkpoint interval, extraction batch, eval
limit and batch): the model keys, stages, suites, hub models, hub datasets and evaluation data source are the
recipe's. The models are tiny but stored the ways the real ones are (fp16, sharded, `.bin` only, SentencePiece vs
byte-level BPE), so the code paths of the real run execute.

What CPU cannot show: accelerate 1.15 only honours an FSDP config on GPUs (accelerate/state.py turns FSDP on only
for MULTI_GPU-like types), so on CPU the FSDP config trains as plain multi-process data parallel; the step-count
test records the distributed type each launcher really got, so this stays visible. DeepSpeed ZeRO-2 does run on CPU
(its CPU accelerator falls back to gloo) when the `deepspeed` package is installed; its first use JIT-compiles a
shared-memory op (~1-3 minutes, cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hubcache import FUSECHAT_MODELS, MODELS, build_hub_cache, hub_env, model_snapshot, stdlib_documents

pytestmark = [pytest.mark.slow, pytest.mark.rehearsal]  # slow, yet in the default run and CI (pyproject addopts)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
ACCELERATE = Path(sys.executable).parent / "accelerate"
STEPS_WORKER = Path(__file__).parent / "distributed" / "steps_worker.py"
TRAINED = ("clm", "fusellm", "kd")
STEPS, BATCH, ACCUM = 4, 4, 2
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def size_overrides() -> list[str]:
    """Sizes only: every other value (models, stages, suites, data sources, lr schedule) is the recipe's."""
    out = []
    for m in TRAINED:
        train = f"models.{m}.train"
        out += [f"{train}.steps={STEPS}", f"{train}.seq_len=64", f"{train}.batch_size={BATCH}",
                f"{train}.grad_accum={ACCUM}", f"{train}.checkpoint_every=2"]
    out += [f"models.{m}.fusion.extract_batch_size=4" for m in ("fusellm", "kd")]
    return out + ["evaluate.limit=1", "evaluate.batch_size=2"]


def _failure(what: str, proc: subprocess.CompletedProcess) -> str:
    """fusebench's own error paragraph (exit code 2) first, then the end of stderr."""
    errors = [line for line in proc.stderr.splitlines() if "fusebench run: error" in line or "Error:" in line]
    return f"{what} failed (exit {proc.returncode}):\n" + "\n".join(errors[:4]) + "\n...\n" + proc.stderr[-3000:]


def _env(hf_home: Path) -> dict[str, str]:
    return {**os.environ, **hub_env(hf_home), "OMP_NUM_THREADS": "1"}


def _launch(config: str | None, args: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    """`accelerate launch` with one of the repo's configs on 2 processes, or a plain process (config None)."""
    if config is None:
        cmd = [sys.executable, *args]
    else:
        cmd = [str(ACCELERATE), "launch", "--config_file", str(CONFIGS / f"{config}.yaml"), "--num_processes", "2",
               "--main_process_port", str(_free_port()), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return build_hub_cache(tmp_path_factory.mktemp("rehearsal_hf_home"), models=MODELS + FUSECHAT_MODELS)


# ---- one scheduler step per optimizer step, whatever the launcher ----------------------------------------------

@pytest.fixture(scope="module")
def step_inputs(hf_home, tmp_path_factory) -> tuple[Path, Path]:
    """The fp16 Llama-2 stand-in (so fp32 master weights are exercised too) and 16 token sequences."""
    from transformers import AutoTokenizer

    model = model_snapshot(hf_home, MODELS[0])
    tok = AutoTokenizer.from_pretrained(str(model))
    ids = tok("\n".join(stdlib_documents()[:3]), add_special_tokens=False)["input_ids"]
    seqs = tmp_path_factory.mktemp("steps") / "sequences.json"
    seqs.write_text(json.dumps([ids[i * 70:i * 70 + 40 + (i % 4) * 8] for i in range(16)]))
    return model, seqs


def _steps_run(config: str | None, inputs, out: Path, env: dict) -> list[dict]:
    steps_batch = [str(STEPS), str(2 * BATCH), str(ACCUM)]  # 2 sequences per process per micro-step on 2 processes
    proc = _launch(config, [str(STEPS_WORKER), str(inputs[0]), str(inputs[1]), str(out), *steps_batch], env, 900)
    assert proc.returncode == 0, _failure(config or "single process", proc)
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


@pytest.fixture(scope="module")
def single_steps(step_inputs, hf_home, tmp_path_factory) -> dict:
    [report] = _steps_run(None, step_inputs, tmp_path_factory.mktemp("single"), _env(hf_home))
    return report


# the distributed type accelerate really gives each config here (FSDP needs GPUs, see the module docstring)
LAUNCHED_AS = {"ddp": "MULTI_CPU", "fsdp": "FSDP" if torch.cuda.is_available() else "MULTI_CPU",
               "deepspeed_zero2": "DEEPSPEED"}


def test_single_process_steps_the_optimizer_and_schedule_once_per_step(single_steps):
    from fusebench.train.loop import TrainSettings, lr_lambda

    assert single_steps["optimizer_steps"] == [STEPS] and single_steps["scheduler_steps"] == [STEPS]
    settings = TrainSettings(steps=STEPS, batch_size=2 * BATCH, grad_accum=ACCUM, lr=1e-3, warmup_ratio=0.25,
                             schedule="cosine", min_lr_ratio=0.0)
    expected = [1e-3 * lr_lambda(settings)(s + 1) for s in range(STEPS)]
    assert single_steps["lrs"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert len(set(single_steps["lrs"])) == STEPS  # the schedule distinguishes every step, so a double step shows


@pytest.mark.parametrize("config", ["ddp", "fsdp", pytest.param("deepspeed_zero2", marks=pytest.mark.skipif(
    not HAS_DEEPSPEED, reason="deepspeed is not installed (pip install deepspeed; it runs ZeRO-2 on CPU over gloo)"))])
def test_every_launcher_steps_optimizer_and_schedule_once_per_recipe_step(config, step_inputs, single_steps, hf_home,
                                                                           tmp_path):
    """Under accelerate launch with each of the repo's configs: as many AdamW steps and scheduler steps as the recipe
    has steps (not one per micro-batch), the single process's learning rates and losses, and for DeepSpeed a
    resolved config whose micro-batch, accumulation and clipping are the recipe's."""
    ranks = _steps_run(config, step_inputs, tmp_path, _env(hf_home))
    assert [r["world"] for r in ranks] == [2, 2]
    for r in ranks:
        assert r["distributed_type"] == LAUNCHED_AS[config]
        assert r["optimizer_steps"] == [STEPS], f"{config}: {r['optimizer_steps']} AdamW updates for {STEPS} steps"
        assert r["scheduler_steps"] == [STEPS]
        assert r["lrs"] == pytest.approx(single_steps["lrs"], rel=1e-9, abs=1e-12)
        assert r["losses"] == pytest.approx(single_steps["losses"], rel=1e-5)
    if config == "deepspeed_zero2":
        assert ranks[0]["deepspeed"] == {"train_micro_batch_size_per_gpu": 2 * BATCH // ACCUM // 2,
                                         "gradient_accumulation_steps": ACCUM, "train_batch_size": 2 * BATCH,
                                         "gradient_clipping": 1.0, "zero_stage": 2}


# ---- the rehearsal: fusebench run recipes/paper.yaml --------------------------------------------------------------

def _run_paper(config: str, workdir: Path, hf_home: Path, only: str | None = None) -> subprocess.CompletedProcess:
    args = ["-m", "fusebench.cli", "run", str(ROOT / "recipes" / "paper.yaml"), *size_overrides(),
            "--workdir", str(workdir), "--results", str(workdir / "results"), "--reports", str(workdir / "reports")]
    return _launch(config, args + (["--only", only] if only else []), _env(hf_home), 1800)


def _train_logs(workdir: Path) -> dict[str, list[dict]]:
    logs = {}
    for name in TRAINED:
        [model_dir] = [p for p in (workdir / "cache" / "model").glob(f"{name}-*") if p.is_dir()
                       and not p.name.endswith((".partial", ".lock"))]
        assert (model_dir / "model.safetensors").is_file(), name
        logs[name] = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return logs


def _check_training(workdir: Path) -> dict[str, list[dict]]:
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.train.loop import TrainSettings, lr_lambda

    recipe = load_recipe(ROOT / "recipes" / "paper.yaml", size_overrides())
    logs = _train_logs(workdir)
    for name, rows in logs.items():
        spec = recipe.models[name].train
        settings = TrainSettings.from_specs(spec, recipe.models[name].fusion)
        assert [r["step"] for r in rows] == list(range(STEPS)), name
        assert all(math.isfinite(r["loss"]) for r in rows), name  # fp16 checkpoints train in fp32 master weights
        assert [(r["optimizer_steps"], r["scheduler_steps"]) for r in rows] == [(s + 1, s + 1) for s in range(STEPS)]
        expected = [spec.lr * lr_lambda(settings)(s + 1) for s in range(STEPS)]
        assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-9, abs=1e-15), name
    assert (next((workdir / "cache" / "model").glob("fusellm-*/fusion_choices.json"))).is_file()
    # the KD teacher shares the target's tokenizer: no vocabulary map, no alignment, no second store
    assert not list((workdir / "cache").glob("align/*llama2_13b*")), "same-tokenizer KD must not be aligned"
    return logs


@pytest.fixture(scope="module")
def ddp_rehearsal(hf_home, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("paper_ddp") / "work"
    proc = _run_paper("ddp", workdir, hf_home)
    assert proc.returncode == 0, _failure("fusebench run recipes/paper.yaml under DDP", proc)
    return workdir


def test_paper_recipe_trains_every_model_under_ddp(ddp_rehearsal):
    _check_training(ddp_rehearsal)


# the hub dataset of every task of each suite, as lm-eval's (and fusebench's MultiPL-E) YAMLs name them
SUITE_DATASETS = {"bbh": {"SaylorTwift/bbh"}, "multipl-e": {"nuprl/MultiPL-E"},
                  "commonsense": {"allenai/ai2_arc", "aps/super_glue", "Rowan/hellaswag", "allenai/openbookqa"}}
SUITE_SIZES = {"bbh": 27, "commonsense": 5, "multipl-e": 10}


def test_paper_recipe_evaluates_every_model_on_every_suite_from_the_hub_datasets(ddp_rehearsal):
    from fusebench.pipeline.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "paper.yaml", size_overrides())
    assert recipe.evaluate.data_for("bbh") == "hub"  # the recipe's own choice, not overridden here
    for model in recipe.evaluate.models:
        for suite in recipe.evaluate.suites:
            [found] = list((ddp_rehearsal / "results").glob(f"*/{model}/{suite}.json"))
            manifest = json.loads(found.with_suffix(".manifest.json").read_text())
            assert manifest["data_source"].startswith("hub"), (model, suite)
            tasks = manifest["tasks"]
            assert len(tasks) == SUITE_SIZES[suite], (model, suite, sorted(tasks))
            assert {t["dataset"] for t in tasks.values()} == SUITE_DATASETS[suite], (model, suite)
            assert all(t["n_docs"] == 1 for t in tasks.values()), (model, suite)  # evaluate.limit
            scored = {s["task"] for s in manifest["scores"] if s["value"] is not None}
            assert set(tasks) <= scored, (model, suite, set(tasks) - scored)  # (+ the suite average)
    assert (ddp_rehearsal / "reports" / "index.md").is_file(), "no report rendered"


def test_paper_recipe_trains_under_the_fsdp_config(hf_home, tmp_path):
    """The training half of the graph (extraction, alignment, CLM / FuseLLM / KD training) under fsdp.yaml, from
    an empty workdir (on CPU accelerate runs it as DDP; the step test above pins that). Kept apart from the DDP
    run so that an evaluation failure there does not hide what training does here."""
    proc = _run_paper("fsdp", tmp_path / "work", hf_home, only="model:")
    assert proc.returncode == 0, _failure("fusebench run recipes/paper.yaml under FSDP", proc)
    _check_training(tmp_path / "work")


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed")
def test_paper_recipe_trains_under_the_deepspeed_config(hf_home, tmp_path):
    """All three trainings of the recipe in one `fusebench run` (one process trains clm, fusellm and kd in turn)
    under deepspeed_zero2.yaml: each takes the recipe's steps, one optimizer and scheduler step per step."""
    proc = _run_paper("deepspeed_zero2", tmp_path / "work", hf_home, only="model:")
    assert proc.returncode == 0, _failure("fusebench run recipes/paper.yaml under DeepSpeed", proc)
    _check_training(tmp_path / "work")


# ---- FuseChat rehearsed: fusebench run recipes/fusechat.yaml ------------------------------------------------------

FUSECHAT_TRAINED = ("fusechat-src_mixtral", "fusechat-src_solar", "fusellm")
FUSECHAT_MERGES = ("fusechat_varm", "fusechat_sce", "fusechat_ties", "fusechat_ta", "fusechat_linear")


def fusechat_overrides() -> list[str]:
    """Sizes only (as for paper.yaml): a few hundred conversations of the mixture stand-in, 4 short steps."""
    out = ["corpora.fusechat_mixture.train_chars=20000", "corpora.fusechat_mixture.test_chars=2000"]
    for m in ("fusechat", "fusellm"):
        train = f"models.{m}.train"
        out += [f"{train}.steps={STEPS}", f"{train}.seq_len=64", f"{train}.batch_size={BATCH}",
                f"{train}.grad_accum={ACCUM}", f"{train}.checkpoint_every=2", f"models.{m}.fusion.extract_batch_size=4"]
    return out


def test_fusechat_recipe_fuses_pairwise_on_replies_and_merges_under_ddp(hf_home, tmp_path):
    """recipes/fusechat.yaml from an empty workdir under 2-process DDP: FuseChat-Mixture's ShareGPT conversations
    rendered in OpenChat-3.5's template (the pivot's), reply-only pairwise fusion with each Nous-Hermes-2 source,
    FuseLLM-style fusion, and the VaRM / SCE / TIES / TA / linear merges of the pairwise targets."""
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.train.loop import TrainSettings, lr_lambda

    workdir = tmp_path / "work"
    args = ["-m", "fusebench.cli", "run", str(ROOT / "recipes" / "fusechat.yaml"), *fusechat_overrides(),
            "--workdir", str(workdir), "--results", str(workdir / "results"), "--reports", str(workdir / "reports")]
    proc = _launch("ddp", args, _env(hf_home), 1800)
    assert proc.returncode == 0, _failure("fusebench run recipes/fusechat.yaml under DDP", proc)

    [chunks] = [p for p in (workdir / "cache" / "chunks").glob("fusechat_mixture.*") if p.is_dir()]
    replies = [json.loads(line) for line in (chunks / "replies.jsonl").read_text().splitlines()]
    assert replies and all(r["text"].startswith("<s>GPT4 Correct User: ") for r in replies)
    for r in replies:  # each reply: after the assistant prompt, up to its end of turn or the cut at seq_len
        for lo, hi in r["replies"]:
            assert r["text"][:lo].endswith("GPT4 Correct Assistant:"), r["text"][:lo][-40:]
            assert r["text"][lo:hi].endswith("<|end_of_turn|>") or hi == len(r["text"]), r["text"][lo:hi]
            assert "GPT4 Correct User" not in r["text"][lo:hi]  # prompts never in the loss

    recipe = load_recipe(ROOT / "recipes" / "fusechat.yaml", fusechat_overrides())
    models = workdir / "models"
    for name in FUSECHAT_TRAINED:
        rows = [json.loads(line) for line in (models / name / "train_log.jsonl").read_text().splitlines()]
        spec = recipe.models[name].train
        settings = TrainSettings.from_specs(spec, recipe.models[name].fusion)
        assert [r["step"] for r in rows] == list(range(STEPS)) and all(math.isfinite(r["loss"]) for r in rows), name
        assert [r["lr"] for r in rows] == pytest.approx([spec.lr * lr_lambda(settings)(s + 1) for s in range(STEPS)],
                                                        rel=1e-9, abs=1e-15), name
    for source in ("src_mixtral", "src_solar"):
        assert set(json.loads((models / f"fusechat-{source}" / "fusion_choices.json").read_text())) == {"(own)", source}
    for merged in FUSECHAT_MERGES:
        assert (models / merged / "mergekit_config.yml").is_file(), merged
