"""Issue 14: `seeds:` trains every seed-dependent model once per seed, tables carry mean ± stderr and paired
intervals, and a run writes into the repo's results/ and reports/ only when publishing is asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fusebench.checksums import seal
from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.pipeline.graph import build_stages, seed_dependent
from fusebench.pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"


def _snapshot(*dirs: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for d in dirs for p in [d, *d.rglob("*")]}


def test_seeds_override_expands_only_the_seed_dependent_models():
    recipe = load_recipe(SMOKE, ["seeds=[0,1]"])
    assert seed_dependent(recipe) == {"clm", "kd", "fusellm"}        # experts, target, sources: shared
    ids = {s.id: s for s in build_stages(recipe)}
    for name in ("clm", "kd", "fusellm"):
        assert f"model:{name}.s0" in ids and f"model:{name}.s1" in ids and f"model:{name}" not in ids
        assert ids[f"model:{name}.s1"].config["train"]["seed"] == ids[f"model:{name}.s0"].config["train"]["seed"] + 1
    for shared in ("model:target", "model:expert_legal", "model:merged", "corpus:mix"):
        assert shared in ids
    plain = {s.id for s in build_stages(load_recipe(SMOKE))}
    for kind in ("align:", "extract:", "vocabmap:", "chunks:"):   # teachers' stores and alignments: not per seed
        assert sorted(i for i in ids if i.startswith(kind)) == sorted(i for i in plain if i.startswith(kind))
    assert "eval:clm.s1.perplexity" in ids and ids["eval:clm.s1.perplexity"].config["seed"] == 1
    # no seeds: the graph (and so every cache key) is the one-run graph of before
    assert "model:clm" in plain and not any(".s0" in sid for sid in plain)


def test_bad_seeds_are_a_recipe_error():
    with pytest.raises(FusebenchError, match="seeds"):
        load_recipe(SMOKE, ["seeds=[1,1]"])


def test_two_seed_smoke_run_trains_twice_tabulates_paired_intervals_and_leaves_the_repo_alone(tmp_path, monkeypatch):
    """The real CLI on the smoke recipe with two seeds, run from the repo root without --publish."""
    watched = [REPO / "results", REPO / "reports"]
    before = _snapshot(*watched)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    assert main(["run", str(SMOKE), "seeds=[0,1]", "evaluate.perplexity_corpora=[code]",
                 "--workdir", str(work)]) == 0
    assert _snapshot(*watched) == before                              # nothing written into the repo
    for name in ("clm", "kd", "fusellm"):                             # one trained model per seed
        assert len(list((work / "cache" / "model").glob(f"{name}.s0-*[0-9a-f]"))) == 1
        assert len(list((work / "cache" / "model").glob(f"{name}.s1-*[0-9a-f]"))) == 1
    assert len(list((work / "cache" / "model").glob("target-*[0-9a-f]"))) == 1
    (run_dir,) = (work / "results").glob("smoke-*")
    assert json.loads((run_dir / "run.json").read_text())["seeds"] == [0, 1]
    manifest = json.loads((run_dir / "clm" / "seed-1" / "perplexity.manifest.json").read_text())
    assert manifest["training_seed"] == 1
    assert (run_dir / "target" / "perplexity.json").exists()         # shared: no seed folder
    # beside the scores: how fusion chose (per model and seed), what alignment delivered, the knowledge available
    choices = json.loads((run_dir / "fusion_choices.json").read_text())
    assert set(choices) == {"kd", "fusellm"} and set(choices["fusellm"]) == {"seed-0", "seed-1"}
    assert sum(choices["fusellm"]["seed-1"].values()) > 0 and "(own)" in choices["fusellm"]["seed-1"]
    alignment = json.loads((run_dir / "alignment.json").read_text())
    assert alignment and all(0 < a["quality"]["coverage"] <= 1 and 0 < a["quality"]["precision"] <= 1
                             for a in alignment.values())
    knowledge = json.loads((run_dir / "knowledge.json").read_text())   # every teacher: measured or named missing
    run_models = json.loads((run_dir / "run.json").read_text())["models"]
    assert (set(knowledge["gaps"]) | set(knowledge["not_evaluated"])
            == {t for m in run_models.values() for t in m["teachers"]})
    assert all("ppl_code" in per for per in knowledge["gaps"].values())
    table = (work / "reports" / f"run_{run_dir.name.replace('-', '_')}_perplexity.md").read_text()
    assert "Seeds: 0, 1 (2) for clm, fusellm, kd" in table
    lines = [line for line in table.splitlines() if line.startswith("| ppl_code")]
    assert "Δ fusellm − clm" in table and "Δ kd − clm" in table
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert any("±" in c for c in cells)                                # mean ± stderr over seeds
    assert sum("[" in c and "]" in c for c in cells) == 2              # a 95% interval per paired difference
    assert "Student-t interval over paired seeds" in table
    for fact in ("Data:", "Documents scored per domain: ppl_code 1", "bits per byte"):
        assert fact in table
    # a recipe that includes this one under another name (as tiny_lambda.yaml includes tiny.yaml) shares its cached
    # evaluations, which sit under the name of the recipe that ran them: it publishes them (crashed before)
    alias = tmp_path / "smoke_alias.yaml"
    alias.write_text(f"include: {SMOKE}\nname: smoke_alias\n")
    assert main(["run", str(alias), "seeds=[0,1]", "evaluate.perplexity_corpora=[code]", "--workdir", str(work)]) == 0
    (alias_dir,) = (work / "results").glob("smoke_alias-*")
    assert (alias_dir / "clm" / "seed-1" / "perplexity.json").read_bytes() == (
        run_dir / "clm" / "seed-1" / "perplexity.json").read_bytes()
    assert _snapshot(*watched) == before


def test_publish_flag_and_recipe_key_choose_the_repo_dirs(tmp_path):
    from argparse import Namespace

    from fusebench.pipeline.commands import output_dirs

    recipe = load_recipe(SMOKE)
    work = tmp_path / "w"
    args = Namespace(publish=False, results=None, reports=None)
    assert output_dirs(args, recipe, work) == (work / "results", work / "reports")
    assert output_dirs(Namespace(publish=True, results=None, reports=None), recipe, work) == (
        Path("results"), Path("reports"))
    assert output_dirs(args, load_recipe(SMOKE, ["publish=true"]), work) == (Path("results"), Path("reports"))
    assert output_dirs(Namespace(publish=True, results=str(tmp_path / "r"), reports=None), recipe, work)[0] == \
        tmp_path / "r"
    assert os.fspath(output_dirs(args, recipe, work)[0]).startswith(os.fspath(work))


def test_smoke_run_without_publish_leaves_the_repo_results_and_reports_untouched(tmp_path, monkeypatch):
    """`fusebench run recipes/smoke.yaml` from the repo root: its evaluation is published and rendered, but into the
    workdir (the smallest slice of the smoke run that publishes: the target and its evaluation)."""
    watched = [REPO / "results", REPO / "reports"]
    before = _snapshot(*watched)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    assert main(["run", str(SMOKE), "evaluate.models=[target]", "evaluate.perplexity_corpora=[code]",
                 "--only", "eval:", "--workdir", str(work)]) == 0
    assert _snapshot(*watched) == before
    assert list((work / "results").glob("smoke-*/target/perplexity.json"))
    assert (work / "reports" / "index.md").exists()
    # the per-item scores travel with the results, and the eval stage's checksums cover them like its other files
    (published,) = (work / "results").glob("smoke-*/target/perplexity.items.json.gz")
    (stage,) = (work / "cache" / "eval").glob("target.perplexity-*[0-9a-f]")
    record = json.loads((stage / ".stage.json").read_text())["files"]
    (rel,) = [r for r in record if r.endswith("target/perplexity.items.json.gz")]
    assert (stage / rel).read_bytes() == published.read_bytes() and record[rel]["bytes"] == published.stat().st_size


def _write_run(root: Path, values: dict[str, dict], unsandboxed: tuple[str, ...] = ()) -> None:
    """A published run in the layout `fusebench run` writes: run.json, shared models flat, seeded ones per seed."""
    run = root / "toy-0123abcd"
    models = {"target": {"role": "target", "init": None, "teachers": []},
              "clm": {"role": "baseline", "init": "target", "teachers": []},
              "kd": {"role": "baseline", "init": "target", "teachers": ["teacher"]},
              "fusellm": {"role": "fused", "init": "target", "teachers": ["a", "b"]}}
    for model, per_seed in values.items():
        for seed, bpb in per_seed.items():
            folder = run / model / ("" if seed is None else f"seed-{seed}")
            folder.mkdir(parents=True, exist_ok=True)
            res = {"results": {"ppl_code": {"bits_per_byte,none": bpb, "bits_per_byte_stderr,none": 0.02}},
                   "higher_is_better": {"ppl_code": {"bits_per_byte": False}},
                   "n-samples": {"ppl_code": {"original": 10, "effective": 10}}}
            (folder / "perplexity.json").write_text(json.dumps(res))
            sandbox = {"requested": "rlimits" if model in unsandboxed else "auto",
                       "modes_used": ["rlimits" if model in unsandboxed else "bwrap"],
                       "unsandboxed": model in unsandboxed}
            (folder / "perplexity.manifest.json").write_text(json.dumps({"data_source": "packaged (offline)",
                                                                         "training_seed": seed,
                                                                         "code_sandbox": sandbox}))
    (run / "run.json").write_text(json.dumps({"recipe": "toy", "models": models, "seeds": [0, 1, 2]}))
    seal(run)   # as `fusebench run` seals what it publishes (fusebench/checksums.py)


def _cells(path: Path) -> dict[tuple[str, str], str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return {(parts[0], h): c for line in lines[2:]
            for parts in [[p.strip() for p in line.strip("|").split("|")]] for h, c in zip(header[1:], parts[1:])}


def test_seed_table_shows_mean_stderr_and_paired_t_intervals_bold_only_when_they_exclude_zero(tmp_path):
    _write_run(tmp_path / "results", {"target": {None: 2.5}, "clm": {0: 2.00, 1: 2.10, 2: 2.05},
                                      "fusellm": {0: 1.90, 1: 2.02, 2: 1.96}, "kd": {0: 2.05, 1: 2.05, 2: 2.10}})
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--format", "md"]) == 0
    cells = _cells(tmp_path / "out" / "run_toy_0123abcd_perplexity.md")
    assert cells[("ppl_code", "clm")] == "2.0500 ± 0.0289 (seeds) (-18.00%)"  # sd 0.05 / √3
    assert cells[("ppl_code", "target")] == "2.5000 ± 0.0200 (docs)"           # one run: per-item stderr
    # fusellm − clm = −0.10, −0.08, −0.09: mean −0.09, sd 0.01, t(0.975, 2) = 4.303 → ±4.303·0.01/√3 = ±0.0248
    assert cells[("ppl_code", "Δ fusellm − clm")] == "**-0.0900** [-0.1148, -0.0652]"
    # kd − clm = +0.05, −0.05, +0.05: the interval covers zero, so no bold
    assert cells[("ppl_code", "Δ kd − clm")] == "+0.0167 [-0.1268, +0.1601]"
    text = (tmp_path / "out" / "run_toy_0123abcd_perplexity.md").read_text()
    for fact in ("Data: packaged (offline)", "Documents scored per domain: ppl_code 10", "Seeds: 0, 1, 2 (3)",
                 "bits per byte", "95% Student-t interval over paired seeds"):
        assert fact in text


def test_single_seed_difference_uses_per_item_stderrs_and_says_so(tmp_path):
    _write_run(tmp_path / "results", {"target": {None: 2.5}, "clm": {None: 2.0}, "fusellm": {None: 1.9}})
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--format", "md"]) == 0
    path = tmp_path / "out" / "run_toy_0123abcd_perplexity.md"
    assert _cells(path)[("ppl_code", "Δ fusellm − clm")] == "**-0.1000** [-0.1554, -0.0446]"   # 1.96·√2·0.02
    assert "a single seed" in path.read_text() and "one training run per model" in path.read_text()


def test_scores_made_in_the_weaker_sandbox_mode_are_marked_unsandboxed_in_the_report(tmp_path):
    _write_run(tmp_path / "a", {"target": {None: 2.5}, "clm": {None: 2.0}, "fusellm": {None: 1.9}})
    _write_run(tmp_path / "b", {"target": {None: 2.5}, "clm": {None: 2.0}, "fusellm": {None: 1.9}},
               unsandboxed=("fusellm",))
    for name in ("a", "b"):
        assert main(["report", "--results", str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"),
                     "--format", "md"]) == 0
    assert "UNSANDBOXED" not in (tmp_path / "out-a" / "run_toy_0123abcd_perplexity.md").read_text()
    assert ("UNSANDBOXED: the generated code of fusellm ran outside the sandbox"
            in (tmp_path / "out-b" / "run_toy_0123abcd_perplexity.md").read_text())
