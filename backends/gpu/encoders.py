"""Input encoders: turn an input batch ``x [B, *shape]`` into what the first projections see.

"analog": x itself every step (a constant current; the engine computes its projection once).
"if":     deterministic integrate-and-fire: v += x; +1 spike when v >= 1 (v -= 1), -1 when v <= -1.
"poisson": Bernoulli spikes with probability |x| per step and the sign of x (requires |x| <= 1).
"""

from __future__ import annotations

import torch

from neurodeploy.errors import ConfigError, DataError


class SpikeEncoder:
    """Stateful spiking encoder for one batch; ``next(steps)`` returns ``[steps, B, *shape]``."""

    def __init__(self, kind: str, x: torch.Tensor, seed: int):
        if kind not in ("if", "poisson"):
            raise ConfigError(f"not a spiking encoding: {kind!r}")
        self.kind, self.x = kind, x
        self.v = torch.zeros_like(x)
        if kind == "poisson":
            if x.abs().max() > 1:
                raise DataError("poisson encoding needs inputs in [-1, 1]; rescale the data or use 'analog'")
            self.generator = torch.Generator(device=x.device).manual_seed(seed)

    def compact(self, keep: torch.Tensor) -> None:
        """Keeps only the items ``keep`` (batch compaction after early exit)."""
        self.x, self.v = self.x[keep], self.v[keep]

    def next(self, steps: int) -> torch.Tensor:
        if self.kind == "poisson":
            draw = torch.rand((steps, *self.x.shape), generator=self.generator, device=self.x.device,
                              dtype=self.x.dtype)
            return (draw < self.x.abs()).to(self.x.dtype) * torch.sign(self.x)
        out = torch.empty((steps, *self.x.shape), dtype=self.x.dtype, device=self.x.device)
        for k in range(steps):
            self.v.add_(self.x)
            s = out[k]
            torch.sub((self.v >= 1).to(s.dtype), (self.v <= -1).to(s.dtype), out=s)
            self.v.sub_(s)
        return out
