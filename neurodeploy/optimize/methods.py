"""Derivative-free search methods over the scale space. Each calls ``f(x) -> loss`` at most
``max_evals`` times and returns nothing: the caller's ``f`` records every point and keeps the best.

- ``subplex``: nlopt's SUBPLEX (Rowan's subspace Nelder-Mead, ``LN_SBPLX``) over every channel at
  once, the method of Dutson et al.'s reference implementation.
- ``coarse_to_fine`` (ours): SUBPLEX over a few tied parameters first, then finer ones. Stage k ties the
  channels of each population into ``groups[k]`` groups of similar heuristic scale (1 = one factor per
  layer, None = every channel free) and searches group offsets around the best point so far. The first
  stages have few dimensions, so the simplex moves the whole network's operating point in tens of
  evaluations where the per-channel simplex needs hundreds of evaluations just to span its space;
  later stages refine what the coarse ones found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import nlopt
import numpy as np

from neurodeploy.ir.network import Network
from neurodeploy.optimize.parameters import ScaleSpace, channel_groups

Loss = Callable[[np.ndarray], float]
#: first simplex step of a silenced fraction (a tenth of the population's channels)
SILENCE_STEP = 0.1


def subplex(f: Loss, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, max_evals: int,
            initial_step: float | np.ndarray) -> None:
    """nlopt LN_SBPLX from ``x0`` within the bounds, ``initial_step`` in every coordinate (or one per
    coordinate)."""
    if max_evals < 1 or x0.size == 0:
        return
    opt = nlopt.opt(nlopt.LN_SBPLX, int(x0.size))
    opt.set_lower_bounds(lower)
    opt.set_upper_bounds(upper)
    opt.set_min_objective(lambda x, grad: f(x))
    opt.set_maxeval(int(max_evals))
    opt.set_initial_step(np.minimum(initial_step, np.maximum((upper - lower) / 4, 1e-6)))
    opt.set_xtol_abs(1e-4)
    with contextlib.suppress(nlopt.RoundoffLimited):  # the best point so far is kept by f's caller
        opt.optimize(np.clip(x0, lower, upper))


def coarse_to_fine(f: Loss, best: Callable[[], np.ndarray], network: Network, space: ScaleSpace,
                   lower: np.ndarray, upper: np.ndarray, max_evals: int, initial_step: float,
                   groups: Sequence[int | None] = (1, 4, 16), evals_per_dimension: Sequence[int] = (25, 10, 6)
                   ) -> None:
    """Staged SUBPLEX over tied channel groups; ``best()`` gives the best full vector so far (the
    starting point of each stage). Initial membranes and silenced fractions (if in the space) are searched in
    the first stage, the fractions with a first step of SILENCE_STEP."""
    used = 0
    for stage, (k, per_dim) in enumerate(zip(groups, evals_per_dimension, strict=True)):
        labels = channel_groups(network, space, k)
        n_groups = int(labels.max()) + 1
        base = best().copy()
        # the first stage also searches what is not a scale: initial membranes, silenced fractions
        n_v = space.size - space.n_scales if stage == 0 else 0

        def expand(g: np.ndarray, labels=labels, base=base, n_groups=n_groups, n_v=n_v) -> np.ndarray:
            x = base.copy()
            x[: space.n_scales] += g[labels]
            if n_v:
                x[space.n_scales:] = g[n_groups:]
            return np.clip(x, lower, upper)

        g0 = np.concatenate([np.zeros(n_groups), base[space.n_scales:] if n_v else []])
        span = upper[0] - lower[0]
        g_lower = np.concatenate([np.full(n_groups, -span), lower[space.n_scales:] if n_v else []])
        g_upper = np.concatenate([np.full(n_groups, span), upper[space.n_scales:] if n_v else []])
        steps = np.full(g0.size, initial_step)
        if n_v and space.silence is not None:
            steps[n_groups + space.n_v_init:] = SILENCE_STEP
        budget = min(per_dim * g0.size, max_evals - used)
        counted = [0]

        def staged(g: np.ndarray, counted=counted, expand=expand) -> float:
            counted[0] += 1
            return f(expand(g))

        subplex(staged, g0, g_lower, g_upper, budget, steps)
        used += counted[0]
        if used >= max_evals:
            return
