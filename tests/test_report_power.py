"""Seed × document intervals, Holm, power: each checked against an independent computation (statsmodels' two-way
ANOVA and Holm, scipy's noncentral t, a Monte Carlo of the crossed model, and lm-eval-style aggregates)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusebench.checksums import seal
from fusebench.evaluate.items import aggregate
from fusebench.report.power import (TTest, crossed_components, crossed_test, holm_levels, mde, ratio_linearised,
                                    seeds_needed, stack_domains)

sm = pytest.importorskip("statsmodels.api")
from statsmodels.formula.api import ols  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402


def crossed(rng, s, n, sd_seed, sd_doc, sd_res, mu=0.0):
    return (mu + rng.normal(0, sd_seed, (s, 1)) + rng.normal(0, sd_doc, (1, n))
            + rng.normal(0, sd_res, (s, n)))


def test_mean_squares_equal_statsmodels_two_way_anova():
    rng = np.random.default_rng(0)
    u = crossed(rng, 5, 40, 0.002, 0.005, 0.003)
    frame = pd.DataFrame([(s, i, u[s, i]) for s in range(5) for i in range(40)], columns=["seed", "doc", "y"])
    table = sm.stats.anova_lm(ols("y ~ C(seed) + C(doc)", frame).fit())
    ms = table["sum_sq"] / table["df"]
    comp = crossed_components(u)
    assert comp.ms == pytest.approx((ms["C(seed)"], ms["C(doc)"], ms["Residual"]), rel=1e-9)


def test_crossed_interval_covers_the_true_difference_95_percent_of_the_time():
    """Monte Carlo of the crossed model: new seeds AND new documents each replicate."""
    rng = np.random.default_rng(1)
    s, n, sds = 8, 60, (0.0012, 0.004, 0.003)
    true_var = sds[0] ** 2 / s + sds[1] ** 2 / n + sds[2] ** 2 / (s * n)
    covered, variances = 0, []
    reps = 1500
    for _ in range(reps):
        test, comp = crossed_test(crossed(rng, s, n, *sds, mu=0.002))
        low, high = test.interval()
        covered += low <= 0.002 <= high
        variances.append(comp.var_mean())
    assert abs(covered / reps - 0.95) < 0.02
    assert np.mean(variances) == pytest.approx(true_var, rel=0.06)


def test_seed_only_interval_undercovers_when_documents_vary():
    """Why the crossed interval exists: a t interval over seeds on fixed documents misses document variance."""
    rng = np.random.default_rng(2)
    s, n, sds = 8, 60, (0.0005, 0.006, 0.002)
    covered = 0
    for _ in range(800):
        rows = crossed(rng, s, n, *sds).mean(axis=1)
        half = stats.t.ppf(0.975, s - 1) * rows.std(ddof=1) / math.sqrt(s)
        covered += abs(rows.mean()) <= half
    assert covered / 800 < 0.8


def test_holm_matches_statsmodels_and_levels_agree_with_rejections():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = list(rng.uniform(0, 0.08, size=int(rng.integers(2, 12))))
        rejected, levels = holm_levels(p)
        assert rejected == list(multipletests(p, alpha=0.05, method="holm")[0])
        assert all((pi <= lv) == r for pi, lv, r in zip(p, levels, rejected))


def test_mde_gives_80_percent_power_by_the_noncentral_t():
    for se, df in [(0.001, 7), (0.0005, 30), (0.002, 200)]:
        delta = mde(se, df)
        crit = stats.t.ppf(0.975, df)
        power = stats.nct.sf(crit, df, delta / se) + stats.nct.cdf(-crit, df, delta / se)
        assert power == pytest.approx(0.80, abs=0.02)


def test_seeds_needed_is_the_fewest_that_reach_the_target_and_none_when_documents_dominate():
    rng = np.random.default_rng(4)
    comp = crossed_components(crossed(rng, 3, 200, 0.0012, 0.002, 0.004))
    s = seeds_needed(comp, 0.002)
    assert s is not None
    assert mde(math.sqrt(comp.var_mean(s)), comp.df(s)) <= 0.002
    assert s == 2 or mde(math.sqrt(comp.var_mean(s - 1)), comp.df(s - 1)) > 0.002
    noisy = crossed_components(crossed(rng, 3, 20, 0.0001, 0.03, 0.001))
    assert seeds_needed(noisy, 0.002) is None


def test_ratio_rows_average_to_each_seeds_bits_per_byte_difference():
    rng = np.random.default_rng(5)
    counts = rng.integers(200, 3000, size=30)
    rows, diffs = [], []
    for _ in range(4):
        m = [[-float(c) * rng.uniform(1.3, 1.6), int(c)] for c in counts]
        c = [[-float(c) * rng.uniform(1.3, 1.6), int(c)] for c in counts]
        rows.append(ratio_linearised(m, c, "bits_per_byte"))
        diffs.append(aggregate("bits_per_byte", m) - aggregate("bits_per_byte", c))
    u = np.vstack(rows)
    assert u.mean(axis=1) == pytest.approx(diffs, abs=1e-12)
    other = [[-1.0, int(counts[0]) + 1]] + [[-1.0, int(c)] for c in counts[1:]]
    assert ratio_linearised(other, [[-1.0, int(c)] for c in counts], "bits_per_byte") is None


def test_stacked_domains_average_per_seed_and_combine_components():
    rng = np.random.default_rng(6)
    parts = [crossed(rng, 5, n, 0.001, 0.004, 0.003) for n in (30, 80, 200)]
    u = stack_domains(parts)
    assert u.mean(axis=1) == pytest.approx(np.mean([p.mean(axis=1) for p in parts], axis=0), abs=1e-12)
    test, _ = crossed_test(u)
    assert test.mean == pytest.approx(np.mean([p.mean() for p in parts]), abs=1e-12)


def test_p_value_and_interval_agree():
    t = TTest(0.003, 0.001, 12)
    low, high = t.interval(alpha=t.p_value())
    assert min(abs(low), abs(high)) == pytest.approx(0.0, abs=1e-12)


def _bpb_items(rng, counts, level, seed_shift, doc_effect):
    """Per-document [loglik, bytes] whose bits per byte is about `level`."""
    nats = (level + seed_shift + doc_effect + rng.normal(0, 0.01, len(counts))) * np.log(2) * counts
    return [[-float(x), int(c)] for x, c in zip(nats, counts)]


def _write_seeded_run(root, rng, passages_per_source=1):
    """A published run of 4 seeds × 2 domains whose evaluations kept per-item scores (as `fusebench run` writes);
    the method's effect per document is shared by `passages_per_source` consecutive documents."""
    import json

    from fusebench.evaluate.items import aggregate, write_items
    run = root / "toy-0123abcd"
    domains = {"ppl_code": rng.integers(300, 3000, 40), "ppl_law": rng.integers(300, 3000, 60)}
    doc_effect = {d: rng.normal(0, 0.02, len(c))[np.arange(len(c)) // passages_per_source]
                  for d, c in domains.items()}
    models = {"target": {"role": "target", "init": None, "teachers": []},
              "clm": {"role": "baseline", "init": "target", "teachers": []},
              "fusellm": {"role": "fused", "init": "target", "teachers": ["a", "b"]}}
    items = {}
    for model, level in (("target", 2.5), ("clm", 2.0), ("fusellm", 1.99)):
        for seed in ([None] if model == "target" else [0, 1, 2, 3]):
            folder = run / model / ("" if seed is None else f"seed-{seed}")
            folder.mkdir(parents=True, exist_ok=True)
            shift = 0.0 if seed is None else rng.normal(0, 0.003)
            record, results = {"format": 1, "tasks": {}}, {}
            for d, counts in domains.items():
                per_doc = _bpb_items(rng, counts, level, shift, doc_effect[d] * (model == "fusellm"))
                items[(model, seed, d)] = per_doc
                record["tasks"][d] = {"none": {"doc_ids": list(range(len(counts))),
                                               "metrics": {"bits_per_byte": per_doc}}}
                results[d] = {"bits_per_byte,none": aggregate("bits_per_byte", per_doc),
                              "bits_per_byte_stderr,none": 0.02}
            (folder / "perplexity.json").write_text(json.dumps({
                "results": results, "higher_is_better": {d: {"bits_per_byte": False} for d in domains},
                "n-samples": {d: {"original": len(c), "effective": len(c)} for d, c in domains.items()}}))
            write_items(record, folder / "perplexity.items.json.gz")
            (folder / "perplexity.manifest.json").write_text(json.dumps({"data_source": "packaged (offline)",
                                                                         "training_seed": seed}))
    (run / "run.json").write_text(json.dumps({"recipe": "toy", "models": models, "seeds": [0, 1, 2, 3]}))
    seal(run)   # as `fusebench run` seals what it publishes (fusebench/checksums.py)
    return domains, items


def _u_by_hand(items, domain, counts):
    """Each seed's bits-per-byte difference plus each document's linearised deviation (re-derived here)."""
    rows = []
    for s in range(4):
        m = np.array([-x for x, _ in items[("fusellm", s, domain)]])
        c = np.array([-x for x, _ in items[("clm", s, domain)]])
        d, n = m - c, np.asarray(counts, dtype=float)
        ratio = d.sum() / n.sum()
        rows.append(ratio / np.log(2) + (d - ratio * n) / (np.log(2) * n.mean()))
    return np.vstack(rows)


def test_report_intervals_carry_seed_and_document_variance_with_holm_and_power(tmp_path):
    from fusebench.cli import main
    from tests.test_seeds_publish import _cells

    domains, items = _write_seeded_run(tmp_path / "results", np.random.default_rng(7))
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--format", "md"]) == 0
    path = tmp_path / "out" / "run_toy_0123abcd_perplexity.md"
    text, cells = path.read_text(), _cells(path)
    parts = {d: _u_by_hand(items, d, c) for d, c in domains.items()}
    total = sum(p.shape[1] for p in parts.values())
    u = np.hstack([p * total / (2 * p.shape[1]) for p in parts.values()])
    frame = pd.DataFrame([(s, i, u[s, i]) for s in range(4) for i in range(total)], columns=["seed", "doc", "y"])
    anova = sm.stats.anova_lm(ols("y ~ C(seed) + C(doc)", frame).fit())
    ms = (anova["sum_sq"] / anova["df"]).to_dict()
    dfs = anova["df"].to_dict()
    assert ms["C(seed)"] > ms["Residual"] and ms["C(doc)"] > ms["Residual"]     # no component truncated
    coef = 1 / (4 * total)
    var = coef * (ms["C(seed)"] + ms["C(doc)"] - ms["Residual"])
    df = var ** 2 / sum((coef * ms[k]) ** 2 / dfs[k] for k in ("C(seed)", "C(doc)", "Residual"))
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    low, high = (float(x) for x in cells[("Avg. 2 domains", "Δ fusellm − clm")].split("[")[1].rstrip("]").split(","))
    assert (low, high) == pytest.approx((u.mean() - half, u.mean() + half), abs=6e-5)
    assert "paired by seed and by document" in text and "Primary endpoint: Avg. 2 domains" in text
    assert "Holm-corrected" in text and "Power (80%): fusellm − clm detects ≥" in text
    assert "± 0.0" in cells[("code", "clm")] and "(seeds)" in cells[("code", "clm")]
    assert "(docs)" in cells[("code", "target")]
    design = _cells(tmp_path / "out" / "design_toy_0123abcd_perplexity.md")
    assert float(design[("Avg. 2 domains", "MDE₈₀ fusellm − clm")]) == pytest.approx(
        (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * math.sqrt(var), abs=6e-5)
    # σ doc ≈ 0.02 over 100 documents: no number of seeds resolves 0.002 here, and the table says why
    assert "more documents needed" in design[("Avg. 2 domains", "seeds for 0.002 fusellm − clm")]


# --- documents clustered by the source document they were cut from ------------------------------------------------

def nested(rng, s, files, per_file, sd_seed, sd_file, sd_doc, sd_res, mu=0.0):
    """Passages of `files` source documents (per_file each): a file effect shared by its passages."""
    file_of = np.repeat(np.arange(files), per_file)
    u = (mu + rng.normal(0, sd_seed, (s, 1)) + rng.normal(0, sd_file, files)[file_of][None, :]
         + rng.normal(0, sd_doc, (1, files * per_file)) + rng.normal(0, sd_res, (s, files * per_file)))
    return u, file_of


def test_every_document_its_own_cluster_is_exactly_the_anova():
    rng = np.random.default_rng(11)
    u = crossed(rng, 6, 50, 0.001, 0.004, 0.003)
    plain, clustered = crossed_components(u), crossed_components(u, [f"d{i}" for i in range(50)])
    assert clustered.ms == pytest.approx(plain.ms, rel=1e-12)
    assert clustered.var_mean() == pytest.approx(plain.var_mean(), rel=1e-12)
    assert clustered.df() == pytest.approx(plain.df(), rel=1e-12)


def test_cluster_robust_document_term_equals_statsmodels_clustered_standard_error():
    rng = np.random.default_rng(12)
    u, file_of = nested(rng, 5, 14, 15, 0.001, 0.01, 0.004, 0.003)
    comp = crossed_components(u, file_of)
    cols = u.mean(axis=0)
    fit = sm.OLS(cols, np.ones((len(cols), 1))).fit(cov_type="cluster", cov_kwds={"groups": file_of})
    s, n = u.shape
    assert comp.ms[1] / (s * n) == pytest.approx(float(fit.bse[0]) ** 2, rel=1e-10)
    assert comp.n_clusters == 14 and comp.df() < 14


def test_clustered_interval_covers_when_passages_share_their_source_and_the_plain_one_does_not():
    """Monte Carlo of new seeds and new source files: 20 files of 10 passages, a file effect as large as the
    passages' own (the code domain's design effect)."""
    rng = np.random.default_rng(13)
    covered_cl = covered_plain = 0
    reps = 1000
    for _ in range(reps):
        u, file_of = nested(rng, 8, 20, 10, 0.001, 0.004, 0.004, 0.003, mu=0.002)
        for clusters in (file_of, None):
            low, high = crossed_test(u, clusters)[0].interval()
            if clusters is None:
                covered_plain += low <= 0.002 <= high
            else:
                covered_cl += low <= 0.002 <= high
    assert abs(covered_cl / reps - 0.95) < 0.025
    assert covered_plain / reps < 0.85


def test_text_scored_in_two_tasks_is_one_cluster_of_their_average():
    """The general mix scores passages the domains score too: its average counts them once when they share a
    cluster, and would halve the document variance if each task's copy counted as independent."""
    rng = np.random.default_rng(14)
    p = crossed(rng, 8, 100, 0.0005, 0.01, 0.001)
    labels = [f"doc{i}" for i in range(100)]
    alone = crossed_components(p, labels).var_mean()
    twice = stack_domains([p, p])
    assert crossed_components(twice, labels + labels).var_mean() == pytest.approx(alone, rel=0.01)
    assert crossed_components(twice, labels + [x + "'" for x in labels]).var_mean() < 0.6 * alone


def test_report_clusters_a_runs_passages_by_their_source_document(tmp_path):
    """clusters.json beside a run widens its intervals to the source documents and says so; one that describes
    another test file is refused."""
    import json

    from fusebench.cli import main
    from fusebench.errors import FusebenchError
    from fusebench.report import paired
    from tests.test_seeds_publish import _cells

    domains, items = _write_seeded_run(tmp_path / "results", np.random.default_rng(7), passages_per_source=5)
    run = tmp_path / "results" / "toy-0123abcd"

    def interval(out):
        assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out), "--format", "md"]) == 0
        path = out / "run_toy_0123abcd_perplexity.md"
        cell = _cells(path)[("Avg. 2 domains", "Δ fusellm − clm")]
        low, high = (float(x) for x in cell.split("[")[1].rstrip("]").split(","))
        return high - low, path.read_text()

    plain, _ = interval(tmp_path / "plain")
    record = {d: {"test_sha256": f"sha-{d}", "of_doc": [f"{d}/file{i // 5}" for i in range(len(c))]}
              for d, c in domains.items()}
    (run / "clusters.json").write_text(json.dumps(record))
    for manifest in run.rglob("perplexity.manifest.json"):
        data = json.loads(manifest.read_text())
        data["tasks"] = {d: {"lm_eval_task": d, "data": {"sha256": f"sha-{d}"}} for d in domains}
        manifest.write_text(json.dumps(data))
    seal(run)
    paired.clear_cache()
    width, text = interval(tmp_path / "clustered")
    assert width > 1.5 * plain    # the method's effect is shared by the 5 passages of a source
    assert "Passages from source documents: ppl_code 40 from 8, ppl_law 60 from 12" in text
    record["ppl_law"]["test_sha256"] = "sha-other"
    (run / "clusters.json").write_text(json.dumps(record))
    seal(run)
    paired.clear_cache()
    with pytest.raises(FusebenchError, match="does not describe the test documents"):
        paired.document_clusters(str(run / "clm" / "seed-0" / "perplexity.json"), "ppl_law", tuple(range(60)))
