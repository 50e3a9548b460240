"""The statistics every verdict comes from, the studies' and the experiments': Welch's t-test on per-seed
numbers (scipy), never a rule of thumb. A claim is "supported" or "not supported" only at p < ALPHA, otherwise
the verdict is "inconclusive"."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

SUPPORTS, REFUTES, INCONCLUSIVE = "supports", "does not support", "inconclusive"
ALPHA = 0.05


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) over seeds, with Welch's two-sided p value and 95% confidence interval."""

    difference: float
    p: float  # nan with fewer than 2 values on a side (no spread to test against)
    low: float
    high: float
    n: tuple[int, int]
    sides: tuple[str, str] | None = None  # names of a and b, so the text says which is subtracted from which

    def text(self, scale: float = 100, unit: str = " points") -> str:
        if min(self.n) == 0:
            return f"n = {self.n[0]}, {self.n[1]}: no unit of one side yet"
        what = f"{self.sides[0]} minus {self.sides[1]}" if self.sides else "difference"
        if math.isnan(self.p):
            return f"{what} {scale * self.difference:+.2f}{unit} (n = {self.n[0]}, {self.n[1]}: too few seeds to test)"
        return (
            f"{what} {scale * self.difference:+.2f}{unit} (95% CI {scale * self.low:+.2f} to "
            f"{scale * self.high:+.2f}), Welch's t-test p = {self.p:.3g}, n = {self.n[0]}, {self.n[1]}"
        )


def welch(a: Sequence[float], b: Sequence[float], sides: tuple[str, str] | None = None) -> Difference:
    """Welch's t-test of mean(a) = mean(b) and the Welch-Satterthwaite 95% interval of the difference
    (`sides`: what a and b are, for the text)."""
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if min(len(a), len(b)) < 2:
        return Difference(diff, math.nan, math.nan, math.nan, (len(a), len(b)), sides)
    result = stats.ttest_ind(a, b, equal_var=False)
    if math.isnan(result.statistic):  # both sides constant: no spread at all
        p = 0.0 if diff != 0 else 1.0
        return Difference(diff, p, diff, diff, (len(a), len(b)), sides)
    interval = result.confidence_interval(0.95)
    low, high = float(interval.low), float(interval.high)
    return Difference(diff, float(result.pvalue), low, high, (len(a), len(b)), sides)


def lower(
    a: Sequence[float], b: Sequence[float], sides: tuple[str, str] | None = None
) -> tuple[str, Difference]:
    """Verdict on the claim "a is lower than b": supported when a < b at p < ALPHA, not supported when a > b
    at p < ALPHA, else inconclusive."""
    d = welch(a, b, sides)
    if math.isnan(d.p) or d.p >= ALPHA:
        return INCONCLUSIVE, d
    return (SUPPORTS if d.difference < 0 else REFUTES), d


def within(
    a: Sequence[float], b: Sequence[float], margin: float, sides: tuple[str, str] | None = None
) -> tuple[str, Difference]:
    """Verdict on "a and b differ by less than `margin`": supported when the 95% interval of the difference
    lies inside (-margin, margin) (two one-sided tests at ALPHA / 2 each), not supported when it lies wholly
    outside, else inconclusive."""
    d = welch(a, b, sides)
    if math.isnan(d.p):
        return INCONCLUSIVE, d
    if -margin < d.low and d.high < margin:
        return SUPPORTS, d
    if d.low >= margin or d.high <= -margin:
        return REFUTES, d
    return INCONCLUSIVE, d


def combine(verdicts: Sequence[str]) -> str:
    """Every part of a claim must hold: one refuted part refutes it, one open part leaves it open."""
    if REFUTES in verdicts:
        return REFUTES
    return SUPPORTS if verdicts and all(v == SUPPORTS for v in verdicts) else INCONCLUSIVE


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: Sequence[float], scale: float = 100, digits: int = 2) -> str:
    """ "mean ± std" of per-seed values (as percentages by default); one value alone, which has no spread."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    mean, std = mean_std(values)
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def reaches(values: Sequence[float], target: float, margin: float) -> tuple[str, str]:
    """Verdict on "the recipe reaches `target` (a source's single number) to within `margin`": supported when
    the 95% t-interval of the seeds' mean lies above target - margin, not supported when it lies below it,
    else inconclusive; with the interval as text."""
    if len(values) < 2:
        return INCONCLUSIVE, f"n = {len(values)}: too few seeds for an interval"
    mean, std = mean_std(values)
    half = stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values))
    low, high = mean - half, mean + half
    text = f"mean {100 * mean:.2f}%, 95% CI {100 * low:.2f} to {100 * high:.2f}%, n = {len(values)}"
    if low > target - margin:
        return SUPPORTS, text
    return (REFUTES if high < target - margin else INCONCLUSIVE), text
