"""Single-seed comparisons paired by item: per-item scores are kept beside each evaluation, reproduce lm-eval's
aggregates, and give a paired interval that matches independent computations and is narrower than the independent
one; results without item files still render, and the caption says which interval a table shows."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fusebench.checksums import seal
from fusebench.cli import main
from fusebench.evaluate.items import aggregate, items_path, read_items
from fusebench.report import paired
from fusebench.report.power import TTest, holm_levels

RUN = "toy-00c0ffee"
LN2 = math.log(2)


def _corpus(root: Path, texts: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_neox_pair, stdlib_texts) -> Path:
    """Two real tiny models (a 'clm' control and a 'fusellm' method) scored by real lm-eval on the same documents:
    two perplexity corpora (12 and 10 documents of varied length) and 30 ARC-Easy items, in a results store."""
    from fusebench.evaluate.api import evaluate_model

    tmp = tmp_path_factory.mktemp("paired")
    docs = [t[: 300 + 150 * i] for i, t in enumerate(stdlib_texts[:22])]
    corpora = {"json": _corpus(tmp / "c1", docs[:12]), "mail": _corpus(tmp / "c2", docs[12:])}
    results = tmp / "results"
    for name, model in zip(("clm", "fusellm"), tiny_neox_pair):
        evaluate_model(model, ["perplexity"], name=name, corpora=corpora, workdir=tmp / "w", results_dir=results,
                       run_id=RUN, device="cpu", max_length=128, batch_size=8)
        evaluate_model(model, ["commonsense:arc_easy"], name=name, limit=30, workdir=tmp / "w",
                       results_dir=results, run_id=RUN, device="cpu", batch_size=8)
    models = {"target": {"role": "target", "init": None, "teachers": []},
              "clm": {"role": "baseline", "init": "target", "teachers": []},
              "fusellm": {"role": "fused", "init": "target", "teachers": ["a", "b"]}}
    (results / RUN / "run.json").write_text(json.dumps({"recipe": "toy", "models": models, "seeds": None}))
    seal(results / RUN, added=[results / RUN / "run.json"])   # as `fusebench run` seals what it publishes
    return results / RUN


def _items(run_dir: Path, model: str, suite: str, task: str, metric: str) -> tuple[list, list]:
    entry = read_items(items_path(run_dir / model / f"{suite}.json"))["tasks"][task]["none"]
    return entry["doc_ids"], entry["metrics"][metric]


def _value(run_dir: Path, model: str, suite: str, task: str, metric: str) -> tuple[float, float]:
    res = json.loads((run_dir / model / f"{suite}.json").read_text())["results"][task]
    return res[f"{metric},none"], res[f"{metric}_stderr,none"]


def test_item_records_reproduce_lm_eval_aggregates_and_are_named_in_the_manifest(run_dir):
    from fusebench.extract.store import sha256_file

    for model in ("clm", "fusellm"):
        for task in ("ppl_json", "ppl_mail"):
            for metric in ("bits_per_byte", "byte_perplexity", "word_perplexity"):
                doc_ids, values = _items(run_dir, model, "perplexity", task, metric)
                assert aggregate(metric, values) == pytest.approx(_value(run_dir, model, "perplexity", task,
                                                                        metric)[0], rel=0, abs=1e-9)
            assert len(doc_ids) == (12 if task == "ppl_json" else 10)
        for metric in ("acc", "acc_norm"):
            doc_ids, values = _items(run_dir, model, "commonsense", "arc_easy_offline", metric)
            assert len(doc_ids) == 30 and set(values) <= {0.0, 1.0}
            assert aggregate(metric, values) == pytest.approx(
                _value(run_dir, model, "commonsense", "arc_easy_offline", metric)[0], abs=1e-12)
        items = items_path(run_dir / model / "perplexity.json")
        named = json.loads((run_dir / model / "perplexity.manifest.json").read_text())["items_file"]
        assert named == {"name": items.name, "sha256": sha256_file(items)}
        assert items.stat().st_size < 4096           # compact: no documents, prompts or responses


def _scores(run_dir, model, suite, task, metric):
    value = _value(run_dir, model, suite, task, metric)[0]
    percent = metric.startswith("acc")
    return paired.item_scores(str(run_dir / model / f"{suite}.json"), task, metric, "none",
                              value * (100 if percent else 1), percent)


def test_paired_bits_per_byte_equals_the_ratio_estimator_and_a_paired_bootstrap(run_dir):
    paired.clear_cache()
    m, c = (_scores(run_dir, x, "perplexity", "ppl_json", "bits_per_byte") for x in ("fusellm", "clm"))
    diff = paired.task_difference(m, c)
    bpb_m, se_m = _value(run_dir, "fusellm", "perplexity", "ppl_json", "bits_per_byte")
    bpb_c, se_c = _value(run_dir, "clm", "perplexity", "ppl_json", "bits_per_byte")
    assert diff.mean == pytest.approx(bpb_m - bpb_c, abs=1e-12) and diff.n == 12
    # independently: y_i = nll_m,i − nll_c,i (nats), x_i = bytes; R = Σy / Σx; textbook ratio-estimator variance
    # s²(y − R x) / (n x̄²), in bits
    _, vm = _items(run_dir, "fusellm", "perplexity", "ppl_json", "bits_per_byte")
    _, vc = _items(run_dir, "clm", "perplexity", "ppl_json", "bits_per_byte")
    ll_m, ll_c, nbytes = (np.array([v[0] for v in vm]), np.array([v[0] for v in vc]), np.array([v[1] for v in vm]))
    assert (nbytes == np.array([v[1] for v in vc])).all()
    y, n = ll_c - ll_m, len(nbytes)
    r = y.sum() / nbytes.sum()
    se = np.sqrt(np.var(y - r * nbytes, ddof=1) / (n * nbytes.mean() ** 2)) / LN2
    assert math.sqrt(diff.var) == pytest.approx(se, rel=1e-9)
    # a paired bootstrap over documents (both models resampled together) agrees up to its own noise
    idx = np.random.default_rng(0).integers(0, n, size=(20000, n))
    boot = (y[idx].sum(1) / nbytes[idx].sum(1)) / LN2
    assert math.sqrt(diff.var) == pytest.approx(boot.std() * math.sqrt(n / (n - 1)), rel=0.15)
    # both models score the same documents: pairing removes the shared document difficulty
    independent = 1.96 * math.sqrt(se_m ** 2 + se_c ** 2)
    paired_half = paired.combine([diff]).high - diff.mean
    assert paired_half < independent / 2, (paired_half, independent)


def test_paired_accuracy_is_the_paired_t_interval(run_dir):
    paired.clear_cache()
    m, c = (_scores(run_dir, x, "commonsense", "arc_easy_offline", "acc") for x in ("fusellm", "clm"))
    diff = paired.combine([paired.task_difference(m, c)])
    _, vm = _items(run_dir, "fusellm", "commonsense", "arc_easy_offline", "acc")
    _, vc = _items(run_dir, "clm", "commonsense", "arc_easy_offline", "acc")
    ci = stats.ttest_rel(100 * np.array(vm), 100 * np.array(vc)).confidence_interval(0.95)
    assert (diff.low, diff.high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert diff.basis == "items" and diff.n_items == 30


def _cells(path: Path) -> dict[tuple[str, str], str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return {(parts[0], h): c for line in lines[2:]
            for parts in [[p.strip() for p in line.strip("|").split("|")]] for h, c in zip(header[1:], parts[1:])}


def _interval(cell: str) -> tuple[float, float]:
    low, high = cell.split("[")[1].rstrip("]").split(",")
    return float(low), float(high)


def test_report_pairs_single_seed_differences_by_item_and_falls_back_without_item_files(run_dir, tmp_path):
    results = run_dir.parent
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "out"), "--format", "md"]) == 0
    table = tmp_path / "out" / "run_toy_00c0ffee_perplexity.md"
    text, cells = table.read_text(), _cells(table)
    assert "95% t interval paired by item" in text and "independent per-item" not in text
    paired.clear_cache()
    parts = [paired.task_difference(*(_scores(run_dir, x, "perplexity", t, "bits_per_byte")
                                      for x in ("fusellm", "clm"))) for t in ("ppl_json", "ppl_mail")]
    one = paired.combine(parts[:1])
    # a domain is a secondary test beside the average (the primary endpoint): its interval is at its Holm level
    tests = [TTest(d.mean, d.se, d.df) for d in (one, paired.combine(parts[1:]))]
    _, levels = holm_levels([t.p_value() for t in tests])
    assert levels[0] in (0.025, 0.05)
    assert _interval(cells[("json", "Δ fusellm − clm")]) == pytest.approx(tests[0].interval(levels[0]), abs=6e-5)
    # the average's interval: mean of the two task differences, variance (v1 + v2) / 4, Welch–Satterthwaite df
    v = [p.var for p in parts]
    df = sum(v) ** 2 / (v[0] ** 2 / 11 + v[1] ** 2 / 9)
    mean, half = (parts[0].mean + parts[1].mean) / 2, stats.t.ppf(0.975, df) * math.sqrt(sum(v)) / 2
    avg = next(r for r, _ in cells if r.startswith("Avg."))
    assert _interval(cells[(avg, "Δ fusellm − clm")]) == pytest.approx((mean - half, mean + half), abs=6e-5)

    # the same results without item files (as results written before they were kept): independent interval
    old = tmp_path / "old"
    shutil.copytree(results, old)
    for f in old.rglob("*.items.json.gz"):
        f.unlink()
    seal(old / RUN)   # sealed as such results were written
    assert main(["report", "--results", str(old), "--out", str(tmp_path / "out-old"), "--format", "md"]) == 0
    old_table = tmp_path / "out-old" / "run_toy_00c0ffee_perplexity.md"
    old_text, old_cells = old_table.read_text(), _cells(old_table)
    assert "independent per-item standard errors" in old_text and "paired by item" not in old_text
    (se_m, se_c) = (_value(run_dir, x, "perplexity", "ppl_json", "bits_per_byte")[1] for x in ("fusellm", "clm"))
    low, high = _interval(old_cells[("json", "Δ fusellm − clm")])
    se = math.sqrt(se_m ** 2 + se_c ** 2)       # at its Holm level (α/2 or α: the second of two tests)
    assert any((high - low) / 2 == pytest.approx(stats.norm.ppf(1 - a / 2) * se, abs=1e-4) for a in (0.025, 0.05))
    assert (high - low) > 2 * (one.high - one.mean)
    for key, cell in cells.items():      # everything but the Δ intervals is unchanged
        if not key[1].startswith("Δ"):
            assert old_cells[key] == cell
    assert "paired by item" in (tmp_path / "out" / "run_toy_00c0ffee_commonsense.md").read_text()


def test_an_item_file_that_is_not_the_one_the_manifest_names_is_refused(run_dir, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(run_dir.parent, results)
    items = results / RUN / "clm" / "perplexity.items.json.gz"
    shutil.copy(results / RUN / "fusellm" / "perplexity.items.json.gz", items)
    seal(results / RUN)   # even a run sealed that way: the manifest names its items file's sha256
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "out"), "--format", "md"]) == 2
    assert "items_file" in capsys.readouterr().err


def test_other_documents_or_byte_counts_are_never_paired():
    same = paired.ItemScores("acc", ("0", "1", "2"), (1.0, 0.0, 1.0), 100.0)
    assert paired.task_difference(same, paired.ItemScores("acc", ("0", "1", "3"), (1.0, 0.0, 1.0), 100.0)) is None
    assert paired.task_difference(same, paired.ItemScores("acc", ("2", "1", "0"), (0.0, 0.0, 0.0), 100.0)).mean == \
        pytest.approx(200 / 3)                                       # paired by doc id, not by position
    a = paired.ItemScores("bits_per_byte", ("0", "1"), ((-10.0, 40), (-20.0, 50)), 1.0)
    b = paired.ItemScores("bits_per_byte", ("0", "1"), ((-11.0, 40), (-19.0, 51)), 1.0)
    assert paired.task_difference(a, b) is None                      # other text: other byte counts
    assert paired.items_difference([None], [a]) is None


def test_a_table_with_paired_and_unpaired_cells_says_so_and_add_run_keeps_items(run_dir, tmp_path):
    """One task's items are missing for the control: its row and the average fall back to the independent interval,
    the other task stays paired, and the caption names both; a run written with ResultsStore.add_run keeps items."""
    from fusebench.report.store import Evaluation, ResultsStore

    evaluations = []
    for model in ("clm", "fusellm"):
        items = read_items(items_path(run_dir / model / "perplexity.json"))
        if model == "clm":
            del items["tasks"]["ppl_mail"]
        results = json.loads((run_dir / model / "perplexity.json").read_text())
        evaluations.append(Evaluation(model, "perplexity", results, {"data_source": "packaged (offline)"}, items))
    ResultsStore(tmp_path / "results").add_run(RUN, evaluations)
    shutil.copy(run_dir / "run.json", tmp_path / "results" / RUN / "run.json")
    seal(tmp_path / "results" / RUN, added=[tmp_path / "results" / RUN / "run.json"])
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--format", "md,csv"]) == 0
    text = (tmp_path / "out" / "run_toy_00c0ffee_perplexity.md").read_text()
    assert "paired by item" in text and "independent per-item standard errors" in text
    with (tmp_path / "out" / "run_toy_00c0ffee_perplexity.csv").open() as f:
        basis = {row["domain"]: row["source_file"] for row in csv.DictReader(f) if row["column"].startswith("Δ")}
    assert basis["json"].startswith("(paired by item") and basis["mail"].startswith("(independent")
    assert next(v for k, v in basis.items() if k.startswith("Avg.")).startswith("(independent")
