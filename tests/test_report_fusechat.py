"""The FuseChat comparison: a run with pairwise-fused models gets a table in the paper's order, each fused row with
its paired difference to the CLM control; the paper's MT-Bench numbers are a separate table, never a column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy import stats

from fusebench.checksums import seal
from fusebench.cli import main as fusebench_main
from fusebench.pipeline.commands import _merge_record
from fusebench.pipeline.recipe import load_recipe
from tests.test_report_tables import REPORTED, parse_markdown

REPO = Path(__file__).resolve().parents[1]
TASKS = ("ppl_chat_gsm8k", "ppl_chat_mbpp")
SEEDS = (0, 1, 2)
# model -> bits per byte on the two tasks; seed s adds SHIFT[model][s] (shared models are trained once)
LEVEL = {"src_neox": (1.10, 1.20), "src_mpt": (1.30, 1.25), "pivot": (2.00, 2.10),
         "fusechat-src_neox": (1.80, 1.90), "fusechat-src_mpt": (1.85, 1.95), "fusechat_varm": (1.70, 1.80),
         "fusechat_ties": (1.75, 1.85), "fusellm": (1.82, 1.92), "clm": (1.90, 2.00)}
SHIFT = {"fusechat-src_neox": (0.00, 0.01, -0.01), "fusechat-src_mpt": (0.01, 0.00, 0.02),
         "fusechat_varm": (0.00, 0.02, 0.01), "fusechat_ties": (0.01, -0.01, 0.00),
         "fusellm": (0.02, 0.00, 0.01), "clm": (0.00, 0.03, -0.02)}


def _value(model: str, task: int, seed: int | None) -> float:
    return LEVEL[model][task] + (0.0 if seed is None else SHIFT[model][seed])


def _published_run(results: Path) -> None:
    """The fusechat_tiny recipe's models as `fusebench run` publishes them (run.json from the recipe itself)."""
    recipe = load_recipe(REPO / "recipes" / "fusechat_tiny.yaml")
    pairwise = {m: g for g, ms in recipe.pairwise_groups.items() for m in ms}
    models = {n: {"role": m.role, "kind": m.kind, "init": m.init, "teachers": m.teachers,
                  "pairwise": pairwise.get(n), "merge": _merge_record(m.merge)} for n, m in recipe.models.items()}
    run = results / "fusechat_tiny-0123abcd"
    for model in LEVEL:
        for seed in (SEEDS if model in SHIFT else (None,)):
            folder = run / model / ("" if seed is None else f"seed-{seed}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "ppl_chat.json").write_text(json.dumps({
                "results": {t: {"bits_per_byte,none": _value(model, i, seed), "bits_per_byte_stderr,none": "N/A"}
                            for i, t in enumerate(TASKS)},
                "higher_is_better": {t: {"bits_per_byte": False} for t in TASKS},
                "n-samples": {t: {"original": 40, "effective": 40} for t in TASKS}}))
    (run / "run.json").write_text(json.dumps({"recipe": recipe.name, "target": "pivot", "models": models,
                                              "seeds": list(SEEDS)}))
    seal(run)


def test_recipe_records_its_pairwise_group_and_merge_methods():
    recipe = load_recipe(REPO / "recipes" / "fusechat_tiny.yaml")
    assert recipe.pairwise_groups == {"fusechat": ["fusechat-src_neox", "fusechat-src_mpt"]}
    assert _merge_record(recipe.models["fusechat_sce"].merge)["method"] == "sce"          # a mergekit block
    assert _merge_record(recipe.models["fusechat_varm"].merge) == {
        "method": "varm", "models": ["fusechat-src_neox", "fusechat-src_mpt"], "base": "pivot"}


def test_fusechat_table_in_the_papers_order_with_paired_differences_and_a_separate_reported_block(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPORTED, results / "reported")
    _published_run(results)
    out = tmp_path / "out"
    assert fusebench_main(["report", "--results", str(results), "--out", str(out), "--format", "md,csv"]) == 0
    header, cells = parse_markdown(out / "fusechat_fusechat_tiny_0123abcd_ppl_chat.md")
    rows = list(dict.fromkeys(r for r, _ in cells))
    assert rows == ["Source: src_neox", "Source: src_mpt", "Pivot: pivot", "Pairwise fusion target: fusechat-src_neox",
                    "Pairwise fusion target: fusechat-src_mpt", "Merge (VaRM): fusechat_varm",
                    "Merge (TIES): fusechat_ties", "FuseLLM multi-source fusion: fusellm", "CLM control: clm"]
    assert header[1:] == ["gsm8k", "mbpp", "Avg. 2 domains", "Δ vs clm: gsm8k", "Δ vs clm: mbpp",
                          "Δ vs clm: Avg. 2 domains"]
    assert not any("MT-Bench" in h or "mt_bench" in h for h in header)   # another metric: never a column here
    assert cells[("Pivot: pivot", "gsm8k")] == "2.0000"
    assert cells[("Pivot: pivot", "Δ vs clm: gsm8k")] == "—"           # only fused rows are compared to CLM
    varm = np.array([np.mean([_value("fusechat_varm", i, s) - _value("clm", i, s) for i in (0, 1)])
                     for s in SEEDS])
    half = stats.t.ppf(0.975, len(SEEDS) - 1) * varm.std(ddof=1) / np.sqrt(len(SEEDS))
    # the primary endpoint (the average) carries the plain 95% paired-seeds t interval
    assert cells[("Merge (VaRM): fusechat_varm", "Δ vs clm: Avg. 2 domains")].replace("**", "") == \
        f"{varm.mean():+.4f} [{varm.mean() - half:+.4f}, {varm.mean() + half:+.4f}]"
    mean = np.mean([_value("fusechat_varm", 0, s) for s in SEEDS])
    assert cells[("Merge (VaRM): fusechat_varm", "gsm8k")].startswith(f"{mean:.4f} ± ")
    assert "(seeds)" in cells[("Merge (VaRM): fusechat_varm", "gsm8k")]
    md = (out / "fusechat_fusechat_tiny_0123abcd_ppl_chat.md").read_text()
    assert "`fusechat_mt_bench`" in md and "Holm" in md
    # the power sentence names this table's own design table, which exists and covers these comparisons
    assert "`design_fusechat_fusechat_tiny_0123abcd_ppl_chat`" in md
    header, _ = parse_markdown(out / "design_fusechat_fusechat_tiny_0123abcd_ppl_chat.md")
    assert any("fusechat_varm − clm" in h for h in header)

    header, reported = parse_markdown(out / "fusechat_mt_bench.md")       # the separate reported block
    assert header == ["Model", "MT-Bench"]
    assert reported[("FuseChat-7B-VaRM", "MT-Bench")].startswith("8.22")
    assert reported[("OpenChat-3.5-7B", "MT-Bench")] == "7.81"
    text = (out / "fusechat_mt_bench.md").read_text()
    assert "not reproduced here" in text and "2402.16107" in text
