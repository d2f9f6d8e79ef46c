"""The accuracy budget as a paired decision: is a candidate (a sparsity fine-tuned model, a set of scales)
shown, on the items both were measured on, to lose more than the budget against the original?

Both models classify the same ``n`` items, so what differs between their accuracies is carried by the
discordant items only: ``gained`` items the candidate gets right and the original wrong, ``lost`` the other
way round. The accuracy difference (candidate minus original) is ``d = (gained - lost) / n``. Given the
``m = gained + lost`` discordant items, ``lost`` is binomial(m, q) and ``d = (m / n) (1 - 2 q)``; the exact
(Clopper-Pearson) interval of q at two-sided level ``confidence`` (``scipy.stats.binomtest``) gives the
interval of d, each end a one-sided bound at level ``(1 + confidence) / 2`` (the McNemar setting,
conditional on m). Comparing the two accuracies as if they were independent would add the variance of
every item both get right or both get wrong, which does not differ between them.

The direction of the decision: a candidate is *inside* the budget unless the whole interval lies below
``-budget``, i.e. unless the data show at the one-sided level ``(1 + confidence) / 2`` (95 % by default)
that it loses more than the budget. So a candidate whose true loss is within the budget is rejected by
noise with probability at most 5 %, and one that the data show to be worse is never admitted. A candidate
that is worse but not shown to be (few discordant items, or a loss just above the budget) is admitted:
deciding the other way round would reject good candidates whenever the items are few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

#: two-sided level of the reported interval; each end is a one-sided (1 + CONFIDENCE) / 2 = 95 % bound
CONFIDENCE = 0.90


@dataclass(frozen=True)
class PairedComparison:
    """A candidate against the original on the same ``items`` items.

    gained: items the candidate gets right and the original wrong; lost: the other way round.
    budget: the accuracy the candidate may lose (fraction, 0.005 = 0.5 pp).
    lower, upper: the interval of the accuracy difference d (candidate minus original, fraction) at
    two-sided level ``confidence``.
    """

    items: int
    gained: int
    lost: int
    budget: float
    confidence: float
    lower: float
    upper: float

    @property
    def difference(self) -> float:
        """d = (gained - lost) / items, the candidate's accuracy minus the original's (fraction)."""
        return (self.gained - self.lost) / self.items if self.items else 0.0

    @property
    def within_budget(self) -> bool:
        """False only when the whole interval lies below -budget (the loss beyond the budget is shown)."""
        return self.upper >= -self.budget - 1e-12

    def as_dict(self) -> dict:
        return {"items": self.items, "gained": self.gained, "lost": self.lost, "difference": self.difference,
                "lower": self.lower, "upper": self.upper, "confidence": self.confidence, "budget": self.budget,
                "within_budget": self.within_budget}


def paired_interval(gained: int, lost: int, items: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The interval of d = (gained - lost) / items at two-sided level ``confidence``: the Clopper-Pearson
    interval (q_lo, q_hi) of the share of discordant items the candidate loses, mapped by
    d = (m / items)(1 - 2 q) with m = gained + lost. (0, 0) when no item is discordant."""
    if gained < 0 or lost < 0 or gained + lost > items:
        raise ValueError(f"need 0 <= gained, lost and gained + lost <= items, got {gained}, {lost}, {items}")
    m = gained + lost
    if m == 0:
        return 0.0, 0.0
    q = binomtest(lost, m).proportion_ci(confidence_level=confidence, method="exact")
    share = m / items
    return share * (1.0 - 2.0 * q.high), share * (1.0 - 2.0 * q.low)


def compare_paired(candidate: np.ndarray, original: np.ndarray, budget: float,
                   confidence: float = CONFIDENCE) -> PairedComparison:
    """The paired comparison of per-item correctness ``candidate [n]`` and ``original [n]`` (bool or 0/1,
    the same items in the same order) under ``budget`` (fraction)."""
    candidate, original = np.asarray(candidate, bool), np.asarray(original, bool)
    if candidate.shape != original.shape or candidate.ndim != 1:
        raise ValueError(f"need two flags [n] of the same items, got {candidate.shape} and {original.shape}")
    gained, lost = int((candidate & ~original).sum()), int((~candidate & original).sum())
    lower, upper = paired_interval(gained, lost, candidate.size, confidence)
    return PairedComparison(candidate.size, gained, lost, budget, confidence, lower, upper)
