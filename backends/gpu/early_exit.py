"""Confidence-based early exit inside the simulator (Dynamic Confidence, Li et al. ICCV 2023).

The rule is the evaluator's (``neurodeploy.evaluate.dynamic_confidence``): an item stops at the first
step t whose confidence log-odds log(C_t / (1 - C_t)), with C_t = max softmax(O_t / alpha), exceeds
the threshold. Here it is evaluated on the readout of every step of a chunk as the chunk finishes;
items that stopped leave the batch before the next chunk (batch compaction), so fewer items are
simulated and early exit saves wall-clock time, not only steps.
"""

from __future__ import annotations

import torch

from neurodeploy.backends.base import ExitPolicy


def confidence_log_odds(readout: torch.Tensor, alpha: float) -> torch.Tensor:
    """``readout [..., K]`` -> log-odds of the top softmax probability ``[...]`` (float64)."""
    z = readout.to(torch.float64) / alpha
    top, index = z.max(dim=-1, keepdim=True)
    others = z.scatter(-1, index, float("-inf"))
    return (top.squeeze(-1) - torch.logsumexp(others, dim=-1))


def first_exit(readout: torch.Tensor, policy: ExitPolicy) -> torch.Tensor:
    """For ``readout [B, steps, K]``: index of the first step whose log-odds exceed the threshold,
    or -1 where none does, shape ``[B]``."""
    above = confidence_log_odds(readout, policy.alpha) > policy.threshold_log_odds
    first = above.to(torch.int8).argmax(dim=1)
    return torch.where(above.any(dim=1), first, torch.full_like(first, -1))
