"""Statistics over seeds for `fedranklite report`. Pure functions of plain numbers.

- CIs of a mean (plain, or of per-seed paired differences) from `scipy.stats.bootstrap`: BCa by default
  (bias-corrected and accelerated; it corrects the percentile bootstrap's under-coverage at few seeds),
  `method="percentile"` on request. Seeds are resampled with replacement (`resamples` draws from a numpy
  Generator seeded with `seed`); every call starts its own Generator, so a number does not depend on what
  else was computed before it.
- Paired tests: the Wilcoxon signed-rank test of the per-seed differences (exact for small n without ties),
  with Holm's step-down correction over the comparisons declared in the sweep spec; the exact sign test of
  wins against losses for censored metrics.
- The minimum detectable effect of a paired comparison at its number of seeds, so a null has a size.
- A censoring-aware median time-to-target, and the rule for when a paired CI earns a significance star.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

MIN_STAR_PAIRS = 8  # fewer pairs: a paired CI gets no significance star (the bootstrap CI is too narrow)
ALPHA = 0.05  # family-wise error rate of the paired tests of one metric (Holm)
POWER = 0.8  # the power at which a minimum detectable effect is stated


@dataclass
class Estimate:
    n: int
    mean: Optional[float]  # None: no values
    lo: Optional[float]  # CI bounds; None with fewer than 2 values
    hi: Optional[float]

    @property
    def excludes_zero(self) -> bool:
        return self.lo is not None and (self.lo > 0 or self.hi < 0)

    def to_json(self) -> dict:
        return {"n": self.n, "mean": self.mean, "ci": None if self.lo is None else [self.lo, self.hi]}


CI_METHODS = ("BCa", "percentile")


def mean_ci(
    values: Sequence[Optional[float]],
    resamples: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "BCa",
) -> Estimate:
    """Mean and bootstrap CI of the mean (`scipy.stats.bootstrap`, BCa or percentile); None/NaN values are left
    out. Identical values have the CI [v, v]; where BCa is undefined (its acceleration needs at least two
    distinct jackknife means) the percentile interval is used."""
    if method not in CI_METHODS:
        raise ValueError(f"CI method {method!r}: one of {', '.join(CI_METHODS)}")
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return Estimate(0, None, None, None)
    if x.size == 1:
        return Estimate(1, float(x[0]), None, None)
    if np.ptp(x) == 0:
        return Estimate(int(x.size), float(x[0]), float(x[0]), float(x[0]))
    lo, hi = _scipy_ci(x, resamples, seed, level, method)
    if not (math.isfinite(lo) and math.isfinite(hi)) and method != "percentile":
        lo, hi = _scipy_ci(x, resamples, seed, level, "percentile")
    return Estimate(int(x.size), float(x.mean()), float(lo), float(hi))


def _scipy_ci(x: np.ndarray, resamples: int, seed: int, level: float, method: str) -> tuple[float, float]:
    import warnings

    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate BCa interval is NaN, handled by the caller
        ci = bootstrap(
            (x,),
            np.mean,
            n_resamples=resamples,
            confidence_level=level,
            method=method,
            vectorized=True,
            random_state=np.random.default_rng(seed),
        ).confidence_interval
    return float(ci.low), float(ci.high)


def paired_differences(
    cell: Mapping[int, Optional[float]], reference: Mapping[int, Optional[float]]
) -> tuple[list[int], list[float]]:
    """Seeds where both have a finite value, and d_s = cell(s) - reference(s) for each of them."""
    seeds = sorted(s for s in cell if s in reference and _finite(cell[s]) and _finite(reference[s]))
    return seeds, [float(cell[s]) - float(reference[s]) for s in seeds]


def paired_ci(
    cell: Mapping[int, Optional[float]],
    reference: Mapping[int, Optional[float]],
    resamples: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "BCa",
) -> Estimate:
    """Mean paired difference over shared seeds with a paired bootstrap CI (the seeds are resampled, each
    carrying its own difference)."""
    _, d = paired_differences(cell, reference)
    return mean_ci(d, resamples, seed, level, method)


def wilcoxon_p(differences: Sequence[float]) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zero differences dropped, as Wilcoxon
    defined it); 1.0 when every difference is zero; None with no pairs."""
    d = np.asarray([x for x in differences if math.isfinite(x)], dtype=np.float64)
    if d.size == 0:
        return None
    if not np.any(d):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjusted p-values over a family of comparisons (None stays None and is not counted):
    the k-th smallest of m p-values becomes max over j <= k of min(1, (m - j + 1) * p_(j)). Rejecting where
    the adjusted p is below alpha controls the family-wise error rate at alpha."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(present), [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def minimum_detectable_effect(differences: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> Optional[float]:
    """The smallest true mean paired difference that a two-sided paired test at level `alpha` would detect with
    probability `power` at this number of seeds: (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd(d) / sqrt(n), the
    paired-t approximation with the observed standard deviation of the differences. None below 2 pairs."""
    d = np.asarray([x for x in differences if math.isfinite(x)], dtype=np.float64)
    if d.size < 2:
        return None
    from scipy.stats import t

    n = d.size
    return float((t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * d.std(ddof=1) / math.sqrt(n))


def censored(times: Sequence[Optional[float]]) -> np.ndarray:
    """Times with 'never reached' (None) as +inf."""
    return np.asarray([math.inf if t is None else float(t) for t in times], dtype=np.float64)


def censored_median(times: Sequence[Optional[float]]) -> Optional[float]:
    """Median time-to-target with unreached runs as +inf: inf when half or more never reached (the median of
    an even count averages the two middle values, so one +inf among them makes it inf); None with no runs."""
    if not times:
        return None
    return float(np.median(censored(times)))


def wins_losses_ties(
    cell: Mapping[int, Optional[float]],
    reference: Mapping[int, Optional[float]],
    lower_is_better: bool,
    missing_is_worst: bool = True,
) -> tuple[int, int, int]:
    """Over seeds in both: how often the cell beats, loses to, ties the reference. With missing_is_worst a
    missing value (a target never reached) counts as the worst possible (+inf when lower is better), so
    two unreached runs tie; otherwise seeds with a missing value on either side are left out."""
    worst = math.inf if lower_is_better else -math.inf
    wins = losses = ties = 0
    for s in sorted(set(cell) & set(reference)):
        a, b = cell[s], reference[s]
        if not (_finite(a) and _finite(b)):
            if not missing_is_worst:
                continue
            a = a if _finite(a) else worst
            b = b if _finite(b) else worst
        if a == b:
            ties += 1
        elif (a < b) == lower_is_better:
            wins += 1
        else:
            losses += 1
    return wins, losses, ties


def censored_pairs(cell: Mapping[int, Optional[float]], reference: Mapping[int, Optional[float]]) -> int:
    """Seeds in both where either side is missing (a target never reached): pairs a mean over the
    both-reached seeds leaves out, which makes that mean conditional on reaching and biased."""
    return sum(not (_finite(cell[s]) and _finite(reference[s])) for s in set(cell) & set(reference))


def sign_test(wins: int, losses: int) -> Optional[float]:
    """Two-sided exact binomial (sign) test p-value of wins vs losses, ties dropped; None with no untied
    pairs."""
    if wins + losses == 0:
        return None
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def star(
    estimate: Estimate,
    censored: int = 0,
    min_pairs: int = MIN_STAR_PAIRS,
    adjusted_p: Optional[float] = None,
    alpha: float = ALPHA,
) -> tuple[bool, Optional[str]]:
    """Whether a paired estimate earns a significance star, and why not when it does not: the CI must
    exclude 0, over at least `min_pairs` pairs, with no censored pair left out of the mean, and where a
    test was made, its family-corrected (Holm) p-value must be below `alpha`."""
    if estimate.lo is None:
        return False, "no CI"
    if censored:
        return False, f"{censored} censored pair(s)"
    if estimate.n < min_pairs:
        return False, f"fewer than {min_pairs} pairs"
    if not estimate.excludes_zero:
        return False, "CI includes 0"
    if adjusted_p is not None and adjusted_p >= alpha:
        return False, f"Holm-adjusted p {adjusted_p:.3f} >= {alpha}"
    return True, None


def _finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)
