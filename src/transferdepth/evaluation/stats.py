"""Statistics over repeated runs (seeds): mean, standard deviation, 95% t-intervals, paired differences.

A study that trains every encoder once per seed reports, per metric, the mean over seeds with its sample
standard deviation and a two-sided 95% Student-t interval for the mean; and, for each encoder against a
baseline, the mean paired difference (same seed = same data order and augmentation) with its interval.
With one seed the spread is unknown: sd and the interval are NaN, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Mean over `n` runs, sample sd (ddof=1) and the 95% t-interval [lo, hi] of the mean."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}mean": self.mean, f"{prefix}sd": self.sd, f"{prefix}ci_lo": self.lo,
                f"{prefix}ci_hi": self.hi, f"{prefix}n": self.n}

    def text(self, digits: int = 3) -> str:
        """'0.812 ± 0.021 [0.786, 0.838]' (mean ± sd [95% interval]); just the mean for one run."""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student-t critical value for `df` degrees of freedom (e.g. 4.303 for df=2 at 95%)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, sd and t-interval of `values` (NaNs are an error: a failed run must not vanish silently)."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"summarize: expected a non-empty list of numbers, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"summarize: non-finite value among {a.tolist()}")
    mean = float(a.mean())
    if a.size < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    sd = float(a.std(ddof=1))
    half = t_quantile(a.size - 1, level) * sd / math.sqrt(a.size)
    return Summary(int(a.size), mean, sd, mean - half, mean + half)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Summary:
    """Summary of a[i] - b[i] over pairs (runs of the same seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} values against {len(b)}; pair runs by seed")
    return summarize(np.asarray(a, np.float64) - np.asarray(b, np.float64), level)
