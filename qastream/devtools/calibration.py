"""Choosing the scorer threshold from scores of answers known to be right and wrong.

Pure functions over lists of BERTScore F1 values, so the recommendation is
table-tested and can be recomputed from the saved figures
(``docs/calibration.json``) without a model.

The criterion is **Youden's J**: the threshold ``t`` that maximises
``J(t) = TPR(t) - FPR(t)``, where ``TPR`` is the share of positives scoring
``>= t`` (right answers the gate keeps) and ``FPR`` the share of negatives
scoring ``>= t`` (wrong answers it lets through).  Maximising J is the same
as maximising balanced accuracy ``(TPR + TNR) / 2 = (1 + J) / 2``: it weighs
both kinds of mistake equally whatever the sizes of the two sets.  Thresholds
are tried on a grid of 0.01 (what a setting would be written as); ties go to
the higher threshold, the stricter gate.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from qastream.telemetry.stats import interpolated_quantile

GRID_STEP = 0.01
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass(frozen=True)
class Summary:
    """Size, mean and quantiles of one distribution."""

    n: int
    mean: Optional[float]
    quantiles: dict[str, Optional[float]]


@dataclass(frozen=True)
class Operating:
    """How a threshold separates positives from negatives."""

    threshold: float
    tpr: float          # positives kept
    fpr: float          # negatives let through
    youden_j: float
    balanced_accuracy: float


@dataclass(frozen=True)
class Recommendation:
    """The chosen threshold, how good it is, and how stable under resampling."""

    criterion: str
    best: Operating
    auc: float
    bootstrap_low: Optional[float] = None
    bootstrap_high: Optional[float] = None
    bootstrap_rounds: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(values: Sequence[float]) -> Summary:
    """Size, mean and the :data:`QUANTILES` of ``values``."""
    ordered = sorted(values)
    mean = sum(ordered) / len(ordered) if ordered else None
    quantiles = {f"p{round(q * 100)}": interpolated_quantile(ordered, q) for q in QUANTILES}
    return Summary(len(ordered), None if mean is None else round(mean, 4),
                   {name: None if value is None else round(value, 4) for name, value in quantiles.items()})


def histogram(values: Sequence[float], width: float = 0.05, low: float = 0.0,
              high: float = 1.0) -> list[tuple[float, int]]:
    """``(bin start, count)`` for bins of ``width`` over [low, high]; values outside go to the end bins."""
    bins = max(1, round((high - low) / width))
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - low) // width)))] += 1
    return [(round(low + i * width, 4), n) for i, n in enumerate(counts)]


def text_histogram(values: Sequence[float], width: float = 0.05, bar: int = 40) -> list[str]:
    """The histogram as text lines from the first to the last non-empty bin, the fullest with ``bar`` marks."""
    rows = histogram(values, width)
    filled = [i for i, (_, n) in enumerate(rows) if n]
    rows = rows[filled[0]:filled[-1] + 1] if filled else []
    top = max((n for _, n in rows), default=0) or 1
    return [f"{start:4.2f}-{start + width:4.2f} {n:5d} {'#' * round(n * bar / top)}" for start, n in rows]


def share_at_least(sorted_values: Sequence[float], threshold: float) -> float:
    """Share of sorted values ``>= threshold``."""
    if not sorted_values:
        return 0.0
    return (len(sorted_values) - bisect.bisect_left(sorted_values, threshold)) / len(sorted_values)


def operating_point(positives: Sequence[float], negatives: Sequence[float], threshold: float) -> Operating:
    """TPR, FPR and Youden's J of ``threshold``."""
    pos, neg = sorted(positives), sorted(negatives)
    return _point(pos, neg, threshold)


def _point(pos: Sequence[float], neg: Sequence[float], threshold: float) -> Operating:
    tpr, fpr = share_at_least(pos, threshold), share_at_least(neg, threshold)
    return Operating(round(threshold, 4), round(tpr, 4), round(fpr, 4), round(tpr - fpr, 4),
                     round((tpr + 1 - fpr) / 2, 4))


def grid(step: float = GRID_STEP) -> list[float]:
    """Candidate thresholds 0, step, ..., 1."""
    return [round(i * step, 4) for i in range(round(1 / step) + 1)]


def best_threshold(positives: Sequence[float], negatives: Sequence[float], step: float = GRID_STEP) -> Operating:
    """The grid threshold with the largest Youden's J (ties: the higher threshold)."""
    if not positives or not negatives:
        raise ValueError("need at least one positive and one negative score")
    pos, neg = sorted(positives), sorted(negatives)
    best: Optional[Operating] = None
    for threshold in grid(step):
        point = _point(pos, neg, threshold)
        if best is None or point.youden_j >= best.youden_j:
            best = point
    assert best is not None
    return best


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counting half (Mann-Whitney)."""
    if not positives or not negatives:
        raise ValueError("need at least one positive and one negative score")
    neg = sorted(negatives)
    wins = 0.0
    for p in positives:
        below = bisect.bisect_left(neg, p)
        ties = bisect.bisect_right(neg, p) - below
        wins += below + ties / 2
    return round(wins / (len(positives) * len(neg)), 4)


def recommend(positives: Sequence[float], negatives: Sequence[float], *, bootstrap_rounds: int = 200,
              seed: int = 0, step: float = GRID_STEP) -> Recommendation:
    """Youden-optimal threshold, the AUC, and the 5th-95th percentile range of the threshold under bootstrap."""
    best = best_threshold(positives, negatives, step)
    low = high = None
    if bootstrap_rounds > 0:
        rng = random.Random(seed)
        picks = sorted(
            best_threshold([rng.choice(positives) for _ in positives],
                           [rng.choice(negatives) for _ in negatives], step).threshold
            for _ in range(bootstrap_rounds))
        low, high = (round(interpolated_quantile(picks, q) or 0.0, 4) for q in (0.05, 0.95))
    return Recommendation("max Youden's J = TPR - FPR (= max balanced accuracy), grid 0.01, ties to the higher",
                          best, auc(positives, negatives), low, high, bootstrap_rounds)
