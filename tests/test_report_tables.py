"""`fusebench report`: the paper's tables rebuilt from the reported set, reproduced runs and comparisons.

Reproduced runs are written in exactly lm-eval 0.4.13's output shape (test_report_store.py checks that shape
against a real lm-eval run).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from fusebench.cli import main as fusebench_main
from fusebench.report.store import Evaluation, ResultsStore

REPO = Path(__file__).resolve().parents[1]
REPORTED = REPO / "results" / "reported"
PERCENT = re.compile(r"\(([+-]\d+\.\d\d)%\)")


def lm_eval_shape(metrics: dict[str, dict[str, float]], metric_up: dict[str, bool], date: float = 1.7e9) -> dict:
    """{task: {metric: value}} as lm-eval's results dict (fractions for accuracies, "N/A" stderr for bpb)."""
    results = {}
    for task, values in metrics.items():
        entry = {"alias": task}
        for metric, value in values.items():
            entry[f"{metric},none"] = value
            entry[f"{metric}_stderr,none"] = "N/A" if metric == "bits_per_byte" else 0.01
        results[task] = entry
    return {"results": results, "group_subtasks": {}, "configs": {t: {"task": t} for t in metrics},
            "versions": {t: 1.0 for t in metrics}, "n-shot": {t: 0 for t in metrics},
            "higher_is_better": {t: {m: metric_up[m] for m in v} for t, v in metrics.items()},
            "n-samples": {t: {"original": 50, "effective": 50} for t in metrics},
            "config": {"model": "hf", "batch_size": 8}, "git_hash": None, "date": date,
            "lm_eval_version": "0.4.13"}


TINY_BPB = {  # model -> (role, bits per byte on legal, biomed, code)
    "tiny-base": ("base", (1.50, 1.80, 1.20)),
    "tiny-expert-legal": ("expert", (1.30, 1.90, 1.30)),
    "tiny-ensemble": ("baseline", (1.40, 1.70, 1.15)),
    "tiny-merge": ("baseline", (1.45, 1.75, 1.19)),
    "tiny-clm": ("baseline", (1.48, 1.78, 1.18)),
    "tiny-fusellm": ("fused", (1.35, 1.72, 1.16)),
}


def tiny_world_run(store: ResultsStore, run_id: str = "tiny-seed0") -> None:
    evaluations = [Evaluation(model, "perplexity", lm_eval_shape(
        {f"tiny_bpb_{d}": {"bits_per_byte": v} for d, v in zip(("legal", "biomed", "code"), values)},
        {"bits_per_byte": False}), {"role": role}) for model, (role, values) in TINY_BPB.items()]
    store.add_run(run_id, evaluations)


def paper_repro_run(store: ResultsStore) -> None:
    """A reproduction of Table 2 that holds two of its models, named differently, roles from run.json."""
    def commonsense(arc_e: float) -> dict:
        tasks = {t: {"acc": 0.5, "acc_norm": 0.6} for t in ("arc_challenge", "hellaswag", "openbookqa")}
        tasks["arc_easy"] = {"acc": 0.7, "acc_norm": arc_e}
        tasks["boolq"] = {"acc": 0.77}             # no acc_norm: the table falls back to acc, as the paper does
        return lm_eval_shape(tasks, {"acc": True, "acc_norm": True})
    store.add_run("repro", [Evaluation("llama2-7b-hf", "commonsense", commonsense(0.75)),
                            Evaluation("fusellm-ours", "commonsense", commonsense(0.7550))],
                  roles={"target": "llama2-7b-hf", "fused": "fusellm-ours"})


def parse_markdown(path: Path) -> tuple[list[str], dict[tuple[str, str], str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    cells = {}
    for line in lines[2:]:
        parts = [p.strip() for p in line.strip("|").split("|")]
        for column, text in zip(header[1:], parts[1:]):
            cells[(parts[0], column)] = text
    return header, cells


@pytest.fixture(scope="module")
def reported_only(tmp_path_factory) -> Path:
    """A results directory holding only the reported set, rendered once by the real CLI."""
    root = tmp_path_factory.mktemp("reported_only")
    shutil.copytree(REPORTED, root / "results" / "reported")
    assert fusebench_main(["report", "--results", str(root / "results"), "--out", str(root / "out")]) == 0
    return root / "out"


def _manifest_tables() -> list[dict]:
    return json.loads((REPORTED / "manifest.json").read_text())["tables"]


def test_every_reported_number_appears_in_its_cell(reported_only):
    checked = 0
    for spec in _manifest_tables():
        _, cells = parse_markdown(reported_only / f"{spec['id']}.md")
        with open(REPORTED / spec["file"]) as f:
            rows = list(csv.DictReader(f))
        for key, wanted in spec.get("select", {}).items():
            rows = [r for r in rows if r[key] == wanted]
        first, *_ = rows[0].keys()
        label_col = spec.get("model_column", first)
        for row in rows:
            for column, text in row.items():
                if column in (label_col, "setting"):
                    continue
                shown = cells[(row[label_col], column)]
                assert shown.replace("**", "").split(" ")[0] == text, (spec["id"], row[label_col], column)
                checked += 1
    assert checked == sum(_is_number(cell) for f in REPORTED.glob("*.csv") for row in csv.reader(open(f))
                          for cell in row)     # every number of every CSV, each checked once


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _value(text: str) -> float:
    return float(text.replace("**", "").split(" ")[0])


def test_relative_changes_are_recomputed_from_the_printed_numbers(reported_only):
    n = 0
    for spec in _manifest_tables():
        header, cells = parse_markdown(reported_only / f"{spec['id']}.md")
        if "reference" in spec:   # the ablations: against Llama-2's averages in the KD table
            _, kd = parse_markdown(reported_only / "kd_comparison.md")
            target = {col: _value(kd[("Llama-2", col)]) for col in header[1:]}
            reference = lambda row, col: target[col]  # noqa: E731
        elif spec["layout"] == "tasks_by_model":
            reference = lambda row, col: _value(cells[(row, spec["target"])])  # noqa: E731
        else:
            reference = lambda row, col: _value(cells[(spec["target"], col)])  # noqa: E731
        for (row, col), text in cells.items():
            found = PERCENT.search(text)
            if found:
                ref = reference(row, col)
                assert float(found.group(1)) == pytest.approx((_value(text) - ref) / ref * 100, abs=0.0051)
                n += 1
    assert n > 100


@pytest.mark.parametrize("table, row, column, printed", [
    ("table1_bbh", "Avg. 27 Tasks", "FuseLLM-7B", "**41.75** (+5.16%)"),   # the paper's headline numbers
    ("table1_bbh", "Avg. 27 Tasks", "Llama-2-CLM-7B", "40.44 (+1.86%)"),
    ("table1_bbh", "Boolean Expressions", "FuseLLM-7B", "71.60 (+4.07%)"),
    ("table2_commonsense", "Avg. 5 Tasks", "FuseLLM-7B", "**64.56** (+1.25%)"),
    ("table2_commonsense", "Avg. 5 Tasks", "Llama-2-CLM-7B", "63.86 (+0.16%)"),
    ("table3_multipl_e", "Avg. 10 Tasks", "FuseLLM-7B", "15.56 (+6.36%)"),
    ("kd_comparison", "Llama-2 KD", "BBH", "40.88 (+2.97%)"),
    ("ablation_alignment", "EM", "BBH", "41.57 (+4.71%)"),
    ("table1_bbh", "Avg. 27 Tasks", "Llama-2-7B", "39.70"),                 # the target: no change shown
    ("table1_bbh", "Avg. 27 Tasks", "MPT-7B", "33.38"),                     # a source: no change shown
    ("ensemble_merging_perplexity", "FUSELLM", "Average", "**0.7034** (-3.31%)"),  # lower is better: min is bold
])
def test_paper_cells_read_like_the_paper(reported_only, table, row, column, printed):
    assert parse_markdown(reported_only / f"{table}.md")[1][(row, column)] == printed


def test_best_per_task_is_bold_including_ties_and_excluding_the_13b_reference(reported_only):
    _, bbh = parse_markdown(reported_only / "table1_bbh.md")
    bold = lambda cells, row: {c for (r, c), t in cells.items() if r == row and "**" in t}  # noqa: E731
    assert bold(bbh, "Boolean Expressions") == {"Llama-2-CLM-7B"}
    assert bold(bbh, "Causal Judgement") == {"MPT-7B", "Llama-2-7B"}
    _, kd = parse_markdown(reported_only / "kd_comparison.md")
    assert not any("**" in t for (r, _), t in kd.items() if r == "Llama-2 13B")
    assert kd[("OpenLLaMA", "MultiPL-E")] == "**18.11**"


def test_paper_averages_are_the_mean_over_tasks():
    for name in ("table1_bbh", "table2_commonsense", "table3_multipl_e"):
        rows = list(csv.reader(open(REPORTED / f"{name}.csv")))[1:]
        for col in range(1, 6):
            tasks = [float(r[col]) for r in rows[:-1]]
            assert sum(tasks) / len(tasks) == pytest.approx(float(rows[-1][col]), abs=0.0051)


def test_latex_html_csv_carry_the_same_cells_and_provenance(reported_only):
    tex = (reported_only / "table1_bbh.tex").read_text()
    assert r"\textbf{41.75} (+5.16\%)" in tex and r"\begin{tabular}{lrrrrr}" in tex
    assert "<b>41.75</b> (+5.16%)" in (reported_only / "table1_bbh.html").read_text()
    rows = list(csv.DictReader(open(reported_only / "table1_bbh.csv")))
    avg = next(r for r in rows if r["task"] == "Avg. 27 Tasks" and r["column"] == "FuseLLM-7B")
    assert float(avg["value"]) == 41.75 and float(avg["change_pct"]) == pytest.approx(5.1637, abs=1e-3)
    assert avg["bold"] == "1" and avg["run_id"] == "reported" and avg["source_file"].endswith("table1_bbh.csv")
    index = (reported_only / "index.md").read_text()
    for spec in _manifest_tables():
        assert f"]({spec['id']}.md)" in index
    assert index.count("reported (run `reported`)") == len(_manifest_tables())


def test_tiny_world_run_gets_a_generic_table_with_changes_against_its_base(tmp_path):
    store = ResultsStore(tmp_path / "results")
    tiny_world_run(store)
    assert fusebench_main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                           "--format", "md,csv", "--stderr"]) == 0
    header, cells = parse_markdown(tmp_path / "out" / "run_tiny_seed0_perplexity.md")
    assert header[1:] == ["tiny-expert-legal", "tiny-base", "tiny-clm", "tiny-ensemble", "tiny-merge",
                          "tiny-fusellm"]                        # inputs, then the target, then what it became
    assert cells[("legal", "tiny-base")] == "1.5000"
    assert cells[("legal", "tiny-fusellm")] == "1.3500 (-10.00%)"
    assert cells[("legal", "tiny-expert-legal")] == "1.3000"   # experts get no change; values are never bolded
    assert cells[("Avg. 3 domains", "tiny-ensemble")] == "1.4167 (-5.56%)"
    assert cells[("Avg. 3 domains", "tiny-fusellm")] == "1.4100 (-6.00%)"
    assert not (tmp_path / "out" / "run_tiny_seed0_perplexity.tex").exists()
    md = (tmp_path / "out" / "run_tiny_seed0_perplexity.md").read_text()
    assert "bits per byte" in md and "lower is better" in md and "`tiny-base`" in md
    assert (tmp_path / "out" / "fig_run_tiny_seed0_perplexity.png").stat().st_size > 10_000
    assert "<text" in (tmp_path / "out" / "fig_run_tiny_seed0_perplexity.svg").read_text()  # labels stay text


def test_stderr_is_always_shown(tmp_path):
    store = ResultsStore(tmp_path / "results")
    paper_repro_run(store)
    for flag, expect in (([], True), (["--stderr"], True)):     # issue 14: ± no longer hides behind a flag
        out = tmp_path / f"out{len(flag)}"
        fusebench_main(["report", "--results", str(tmp_path / "results"), "--out", str(out), "--format", "md",
                        *flag])
        _, cells = parse_markdown(out / "run_repro_commonsense.md")
        assert ("± 1.00" in cells[("arc_easy", "fusellm-ours")]) is expect


def test_reproduced_run_sits_beside_the_paper_with_differences(tmp_path):
    shutil.copytree(REPORTED, tmp_path / "results" / "reported")
    paper_repro_run(ResultsStore(tmp_path / "results"))
    fusebench_main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                    "--format", "md"])
    header, cells = parse_markdown(tmp_path / "out" / "table2_commonsense_vs_repro.md")
    assert header[1:] == ["Llama-2-7B paper", "Llama-2-7B ours", "Llama-2-7B Δ", "FuseLLM-7B paper",
                          "FuseLLM-7B ours", "FuseLLM-7B Δ"]
    assert cells[("ARC-easy", "FuseLLM-7B paper")] == "75.04"
    assert cells[("ARC-easy", "FuseLLM-7B ours")] == "75.50 ± 1.00"
    assert cells[("ARC-easy", "FuseLLM-7B Δ")] == "+0.46"
    assert cells[("BoolQ", "Llama-2-7B ours")] == "77.00 ± 1.00"   # acc, BoolQ having no acc_norm
    assert cells[("Avg. 5 Tasks", "Llama-2-7B ours")] == "66.40"   # (75 + 77 + 3 * 60) / 5
    index = (tmp_path / "out" / "index.md").read_text()
    assert "reported + reproduced (run `reported`, `repro`)" in index


def test_bad_format_and_empty_store_are_user_errors(tmp_path, capsys):
    assert fusebench_main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "holds no results" in capsys.readouterr().err
    assert fusebench_main(["report", "--results", str(REPO / "results"), "--out", str(tmp_path / "o"),
                           "--format", "md,pdf"]) == 2
    assert "unknown format(s) pdf" in capsys.readouterr().err


def test_lm_eval_task_names_line_up_with_the_papers_rows_across_suites(tmp_path):
    """Offline BBH tasks (`bbh_cot_fewshot_navigate_offline`, filter get-answer, with a group row) land in Table 1's
    rows, and LAMBADA, a suite of its own, lands in Table 8's row."""
    shutil.copytree(REPORTED, tmp_path / "results" / "reported")
    bbh = {f"bbh_cot_fewshot_{t}_offline": {"exact_match,get-answer": v, "exact_match_stderr,get-answer": 0.02}
           for t, v in (("navigate", 0.60), ("snarks", 0.50))}
    bbh["bbh"] = {"exact_match,get-answer": 0.99}     # a group row: flagged, never shown as a task or average
    bbh_results = {"results": bbh, "groups": {"bbh": bbh["bbh"]}, "group_subtasks": {"bbh": sorted(bbh)[1:]}}
    lambada = lm_eval_shape({"lambada_offline": {"acc": 0.7401, "perplexity": 4.2}}, {"acc": True, "perplexity": False})
    ResultsStore(tmp_path / "results").add_run("paper-seed0", [
        Evaluation("FuseLLM-7B", "bbh", bbh_results), Evaluation("FuseLLM-7B", "lambada", lambada)])
    fusebench_main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--format", "md"])
    _, cells = parse_markdown(tmp_path / "out" / "table1_bbh_vs_paper_seed0.md")
    assert (cells[("Navigate", "FuseLLM-7B paper")], cells[("Navigate", "FuseLLM-7B ours")]) == ("64.40", "60.00 ± 2.00")
    assert ("Avg. 27 Tasks", "FuseLLM-7B ours") not in cells   # 2 of 27 tasks: not comparable to the paper's average
    _, gen = parse_markdown(tmp_path / "out" / "table8_generation_vs_paper_seed0.md")
    assert gen[("LAMBADA", "FuseLLM-7B Δ")] == "+0.29"                    # 74.01 − 73.72
    header, run = parse_markdown(tmp_path / "out" / "run_paper_seed0_bbh.md")
    assert {r for r, _ in run} == {"navigate", "snarks", "Avg. 2 tasks"}  # shared prefix and suffix dropped
    assert run[("Avg. 2 tasks", "FuseLLM-7B")] == "55.00 ± 1.41 (docs)"   # √(2·2²)/2: tasks taken as independent
    assert (tmp_path / "out" / "fig_run_paper_seed0_bbh.png").exists()


def test_a_proxy_or_an_item_limited_run_never_enters_the_papers_cells(tmp_path, reported_only):
    """Issue 14: MBPP bits per byte (a likelihood proxy) never lands in a pass@1 cell or an average with pass@1;
    commonsense on 200 items per task (toy models at chance) gets no Δ against Llama-2-7B; figures say on the image
    whether they are reported or reproduced, and accuracy plots draw chance and majority lines."""
    shutil.copytree(REPORTED, tmp_path / "results" / "reported")
    langs = ("cpp", "go", "java", "js", "php", "py", "r", "rb", "rs", "ts")
    code = lm_eval_shape({**{f"mbpp_bpb_{lang}": {"bits_per_byte": 1.0 + i / 10} for i, lang in enumerate(langs)},
                          "humaneval_sandboxed": {"pass@1": 0.2}}, {"bits_per_byte": False, "pass@1": True})
    tasks = {t: {"acc": 0.25, "acc_norm": 0.26} for t in ("arc_easy", "arc_challenge", "hellaswag", "openbookqa")}
    tasks["boolq"] = {"acc": 0.365}
    commonsense = lm_eval_shape(tasks, {"acc": True, "acc_norm": True})
    commonsense["n-samples"] = {t: {"original": 2376, "effective": 200} for t in tasks}
    ResultsStore(tmp_path / "results").add_run("toy", [
        Evaluation(m, s, r, {"data_source": "packaged (offline)"}) for m in ("tiny-target", "tiny-fusellm")
        for s, r in (("multipl-e", code), ("commonsense", commonsense))],
        roles={"target": "tiny-target", "fused": "tiny-fusellm"})
    out = tmp_path / "out"
    assert fusebench_main(["report", "--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    for paper_table in ("table3_multipl_e", "table2_commonsense", "kd_comparison", "number_of_sources"):
        assert not (out / f"{paper_table}_vs_toy.md").exists(), paper_table
    _, run = parse_markdown(out / "run_toy_multipl_e.md")
    averages = {r for r, _ in run if r.startswith("Avg.")}
    assert averages == {"Avg. 10 tasks (bits per byte)"}          # pass@1 (one task) is never averaged with bpb
    caption = (out / "run_toy_multipl_e.md").read_text()
    assert "likelihood proxy, not pass@k" in caption and "Data: packaged (offline)" in caption
    caption = (out / "run_toy_commonsense.md").read_text()
    assert "Items scored per task:" in caption and "arc_challenge 200 of 2376" in caption
    assert "Seeds: one training run" in caption
    svg = (out / "fig_run_toy_commonsense.svg").read_text()
    assert "REPRODUCED" in svg and "chance" in svg and "majority class" in svg
    assert "REPORTED" in (reported_only / "fig_benchmarks_paper.svg").read_text()
    assert "REPORTED" in (reported_only / "fig_bbh_change_paper.svg").read_text()
