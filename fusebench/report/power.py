"""Differences that carry both seed and document variance; multiplicity; and what a design can detect.

**The design is crossed.** Every seed of a method and of its control (CLM, same seed) is scored on the same N test
documents, so a per-(seed, document) paired difference u[s, i] has a seed effect (the training run's luck, shared by
all documents), a document effect (some documents favour the method whatever the seed) and an interaction:

    u[s, i] = μ + a_s + b_i + e_si,   a ~ (0, σ_seed²), b ~ (0, σ_doc²), e ~ (0, σ_res²)

The reported difference is the grand mean ū, whose variance for a new draw of seeds *and* documents is

    Var(ū) = σ_seed² / S + σ_doc² / N + σ_res² / (S·N).

The components come from the two-way ANOVA mean squares (balanced, one observation per cell):
E[MS_seed] = σ_res² + N σ_seed², E[MS_doc] = σ_res² + S σ_doc², E[MS_res] = σ_res², so the unbiased estimate is
(MS_seed + MS_doc − MS_res) / (S·N); a component estimated below zero is set to zero (then the matching mean square
stands alone). The interval is Student-t with Satterthwaite's degrees of freedom for that combination of mean
squares (the textbook approximation for a crossed random-effects mean). A t interval over seeds alone (stats.py,
basis "seeds") treats the documents as fixed: it answers "on these documents", this answers "on the domain".

**Documents clustered by source.** A test set of passages cut from longer files (the tiny world's 1000-character
passages: code's 200 come from 14 standard-library modules) is not N independent documents: passages of one file
share its style and subject, so their differences correlate and σ_doc²/N understates the document variance (measured
on tiny-db9c8f8e: 2.1–3.1x in standard error on code and legal). Given each document's cluster (its source file), the
document mean square is replaced by its cluster-robust counterpart: with c_i the document's mean over seeds, c̄
their mean, G clusters,

    V_cl = G / (G − 1) · Σ_g (Σ_{i∈g} (c_i − c̄))² / N²,   MS_doc := S·N·V_cl,   df_doc = G − 1,

the sandwich estimator of Var(mean of c_i) with clusters as the independent units (it estimates
σ_doc²/N + σ_res²/(S·N) whatever the correlation inside a cluster). With every document its own cluster
(G = N) it is exactly the ANOVA MS_doc above, so the two designs are one formula. In an average over domains a
cluster spans the tasks that score its passages (the tiny world's `general` mix scores passages of the same held-out
documents as the domains), so text scored twice is counted once.

For a ratio metric (bits per byte: Σ nll / Σ bytes) u is the ratio estimator's linearisation per seed (paired.py):
u[s, i] = D_s + N·z_si, whose mean over documents is exactly seed s's difference D_s. An average over domains stacks
the domains' documents side by side, each domain's columns scaled by N_total / (k·N_d), so that every row's mean is
that seed's average difference: the same algebra then carries seeds shared across domains.

**Multiplicity.** The primary endpoint of a run table is the average over its domains (one test per method, at
α = 0.05). The per-domain cells are secondary: Holm's step-down over all of a table's per-domain tests; a cell's
interval is shown at the level of its Holm step (α / (m − k) for the k-th smallest p, and the level of the first
non-rejected step for the rest), so "bold" and "the corrected interval excludes zero" are the same statement.

**Power.** A two-sided t test with standard error se and df degrees of freedom detects a true difference Δ with
probability 1 − β when Δ ≥ (t_{1−α/2, df} + t_{1−β, df})·se: the minimal detectable effect (MDE) at 80% power.
`seeds_needed` inverts it over S for the measured components; σ_doc²/N does not shrink with seeds, so past some Δ
only more documents help, and it says so (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Components:
    """Variance components of a crossed seed × document design, and the mean squares behind them."""

    seed: float
    doc: float
    res: float
    n_seeds: int
    n_docs: int
    ms: tuple[float, float, float]          # MS_seed, MS_doc (cluster-robust where clustered), MS_res
    n_clusters: int | None = None           # independent units of the document side; None: every document

    def _clusters(self, n_docs: int) -> float:
        """Clusters in a design of n_docs documents (planning scales them with the documents)."""
        g = self.n_clusters or self.n_docs
        return g * n_docs / self.n_docs

    def var_mean(self, n_seeds: int | None = None, n_docs: int | None = None) -> float:
        s, n = n_seeds or self.n_seeds, n_docs or self.n_docs
        return self.seed / s + self.doc / n + self.res / (s * n)

    def df(self, n_seeds: int | None = None, n_docs: int | None = None) -> float:
        """Satterthwaite's df of var_mean written as a combination of mean squares, Σ c_k MS_k, with df_k = S − 1,
        N − 1, (S − 1)(N − 1). For a design of other size (planning) the mean squares are their expectations there
        (E[MS_seed] = σ_res² + N σ_seed², E[MS_doc] = σ_res² + S σ_doc²). A zero component drops its mean square
        from the combination: var = MS_doc / SN when σ_seed² = 0, and so on."""
        s, n = n_seeds or self.n_seeds, n_docs or self.n_docs
        ms = (self.res + n * self.seed, self.res + s * self.doc, self.res)
        dfs = (s - 1, self._clusters(n) - 1, (s - 1) * (n - 1))
        coef = [float(self.seed > 0), float(self.doc > 0), 1.0 - (self.seed > 0) - (self.doc > 0)]
        terms = [c * m / (s * n) for c, m in zip(coef, ms)]
        den = sum(t * t / d for t, d in zip(terms, dfs) if d > 0 and t != 0)
        return sum(terms) ** 2 / den if den > 0 else math.inf


def cluster_robust_ms(cols: np.ndarray, clusters, n_seeds: int) -> tuple[float, int]:
    """(MS_doc, G): the cluster-robust document mean square of the column means `cols` (see the module text)."""
    labels = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)[1]
    g, n = int(labels.max()) + 1, len(cols)
    if g < 2:
        raise ValueError("a clustered design needs documents from ≥ 2 clusters")
    sums = np.bincount(labels, weights=cols - cols.mean(), minlength=g)
    return n_seeds * n * g / (g - 1) * float((sums ** 2).sum()) / n ** 2, g


def crossed_components(u: np.ndarray, clusters=None) -> Components:
    """Components of an S × N matrix (S ≥ 2 seeds, N ≥ 2 documents) by the ANOVA method, truncated at zero;
    `clusters` (one label per document) makes the document side cluster-robust."""
    u = np.asarray(u, dtype=np.float64)
    s, n = u.shape
    if s < 2 or n < 2:
        raise ValueError(f"a crossed design needs ≥ 2 seeds and ≥ 2 documents, got {s} × {n}")
    grand = u.mean()
    rows, cols = u.mean(axis=1), u.mean(axis=0)
    ms_seed = n * ((rows - grand) ** 2).sum() / (s - 1)
    ms_doc, g = ((s * ((cols - grand) ** 2).sum() / (n - 1), None) if clusters is None
                 else cluster_robust_ms(cols, clusters, s))
    resid = u - rows[:, None] - cols[None, :] + grand
    ms_res = (resid ** 2).sum() / ((s - 1) * (n - 1))
    return Components(max(0.0, (ms_seed - ms_res) / n), max(0.0, (ms_doc - ms_res) / s), ms_res, s, n,
                      (ms_seed, ms_doc, ms_res), g)


@dataclass(frozen=True)
class TTest:
    """A difference with its standard error and df: what an interval, a p-value and a power figure need."""

    mean: float
    se: float
    df: float

    def p_value(self) -> float:
        if self.se == 0:
            return 0.0 if self.mean != 0 else 1.0
        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.df))

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        half = float(stats.t.ppf(1 - alpha / 2, self.df)) * self.se
        return self.mean - half, self.mean + half

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        return mde(self.se, self.df, alpha, power)


def crossed_test(u: np.ndarray, clusters=None) -> tuple[TTest, Components]:
    comp = crossed_components(u, clusters)
    return TTest(float(np.mean(u)), math.sqrt(comp.var_mean()), comp.df()), comp


def mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided level-α t test detects with probability `power`."""
    return float(stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se


def seeds_needed(comp: Components, delta: float, n_docs: int | None = None, alpha: float = ALPHA,
                 power: float = POWER, most: int = 256) -> int | None:
    """Fewest seeds (≥ 2) whose design detects `delta` with `power`; None when no seed count up to `most` does
    (the document variance alone is too large: more documents are needed)."""
    for s in range(2, most + 1):
        if mde(math.sqrt(comp.var_mean(s, n_docs)), comp.df(s, n_docs), alpha, power) <= delta:
            return s
    return None


def holm_levels(p_values: list[float], alpha: float = ALPHA) -> tuple[list[bool], list[float]]:
    """Holm's step-down: (rejected, the level each test's interval is shown at), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    rejected, levels = [False] * m, [alpha / m] * m
    stopped_at = None
    for k, i in enumerate(order):
        level = alpha / (m - k)
        if stopped_at is None and p_values[i] <= level:
            rejected[i], levels[i] = True, level
        else:
            stopped_at = level if stopped_at is None else stopped_at
            levels[i] = stopped_at
    return rejected, levels


def ratio_linearised(method: list, control: list, metric: str) -> np.ndarray | None:
    """One seed's u row for a ratio metric: method/control are per-document [loglik, count] pairs on the same
    documents in the same order; None when the counts differ (not the same text)."""
    if any(a[1] != b[1] for a, b in zip(method, control)):
        return None
    counts = np.array([a[1] for a in method], dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return None
    nll_m = -np.array([a[0] for a in method], dtype=np.float64)
    nll_c = -np.array([b[0] for b in control], dtype=np.float64)
    r_m, r_c = nll_m.sum() / total, nll_c.sum() / total
    if metric == "bits_per_byte":
        g, dg = (lambda r: r / math.log(2)), (lambda r: 1 / math.log(2))
    else:
        g, dg = math.exp, math.exp
    diff = g(r_m) - g(r_c)
    z = (dg(r_m) * (nll_m - r_m * counts) - dg(r_c) * (nll_c - r_c * counts)) / total
    return diff + len(counts) * z


def stack_domains(parts: list[np.ndarray]) -> np.ndarray:
    """The u matrix of the average over domains (each part S × N_d, same seeds in the same order): columns side by
    side, domain d's scaled by N_total / (k·N_d) so that each row's mean is the seed's average difference."""
    k, total = len(parts), sum(p.shape[1] for p in parts)
    return np.hstack([p * (total / (k * p.shape[1])) for p in parts])
