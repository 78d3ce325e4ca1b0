"""Statistics of reproduced numbers: mean ± standard error over seeds, and paired differences with 95% intervals.

With several seeds a model's cell is the mean over its seeds and the standard error of that mean (sample standard
deviation / √n). A continual method is compared with its control (CLM trained from the same model on the same data,
same seed) through the paired differences d_s = method_s − control_s: their mean and a two-sided 95% Student-t
interval with n − 1 degrees of freedom (scipy's t quantile); basis "seeds". With a single seed there is no spread
over seeds: the cell shows lm-eval's per-item (per-document) standard error instead, and the difference is paired by
item where both evaluations stored per-item scores on the same documents (basis "items", fusebench/report/paired.py:
the per-item differences' delta-method standard error, a t interval). Without them (results written before per-item
scores were kept, or other documents) the interval is ±1.96·√(se_method² + se_control²) (basis "independent"),
which treats the two models' item errors as independent: both score the same items, whose errors are positively
correlated, so it is wider than the paired one. The caption says which interval a table shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    stderr: float | None          # over seeds (n > 1) or per item (n == 1); None when unknown
    n: int                        # seeds


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float | None
    high: float | None
    n: int                        # paired seeds
    basis: str = "seeds"          # seeds: t over paired seeds; items: one seed, paired by item; independent:
    n_items: int | None = None    # one seed, per-item stderrs as if independent; seeds×items: several seeds, paired
    se: float | None = None       # by seed and document (power.py). n_items: documents paired. se, df: what the
    df: float | None = None       # interval came from (p-values, Holm, power); alpha: its two-sided level
    alpha: float = 0.05

    @property
    def paired(self) -> bool:
        return self.basis != "independent"

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def _finite(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def over_seeds(values: list[float], item_stderrs: list[float | None]) -> Estimate:
    """Mean over seeds with its standard error; one value keeps its per-item standard error."""
    if len(values) == 1:
        return Estimate(values[0], _finite(item_stderrs[0]) if item_stderrs else None, 1)
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, sd / math.sqrt(n), n)


def paired_difference(method: dict, control: dict, method_se: dict, control_se: dict) -> Difference | None:
    """method/control: seed -> value. Paired over the seeds both have; one shared seed falls back to per-item
    standard errors (None when those are unknown too)."""
    seeds = sorted(set(method) & set(control), key=str)
    if not seeds:
        return None
    diffs = [method[s] - control[s] for s in seeds]
    n = len(diffs)
    mean = sum(diffs) / n
    if n > 1:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        return Difference(mean, mean - half, mean + half, n, "seeds", se=sd / math.sqrt(n), df=n - 1)
    se_m, se_c = _finite(method_se.get(seeds[0])), _finite(control_se.get(seeds[0]))
    if se_m is None or se_c is None:
        return Difference(mean, None, None, 1, "independent")
    se = math.sqrt(se_m ** 2 + se_c ** 2)
    half = stats.norm.ppf(0.975) * se
    return Difference(mean, mean - half, mean + half, 1, "independent", se=se, df=math.inf)
