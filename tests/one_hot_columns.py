"""The tests' reference for a chain's matrix: each column built by pushing one source neuron's one-hot input
through the compiled chain (float64). Quadratic in the population sizes, so the library never uses it
(``neurodeploy.ir.op_matrix`` builds the matrices from each op's parameters); the tests check those against it."""

from collections.abc import Callable, Iterator

import numpy as np
import torch

#: elements (float64) of one batch of one-hot inputs or of the columns they give: 64 MB
COLUMN_BATCH_ELEMENTS = 1 << 23


def chain_columns(chain: Callable[[torch.Tensor], torch.Tensor], source_shape: tuple[int, ...],
                  n_target: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The columns of a chain's matrix, as many at a time as keep the inputs and the columns within
    :data:`COLUMN_BATCH_ELEMENTS` (``n_target``: the chain's output size, when known): yields
    ``(first source index, columns [n, n_target])``."""
    n_source = int(np.prod(source_shape))
    batch = max(1, COLUMN_BATCH_ELEMENTS // max(n_source, n_target or 0))
    with torch.no_grad():
        for start in range(0, n_source, batch):
            stop = min(start + batch, n_source)
            basis = torch.zeros((stop - start, n_source), dtype=torch.float64)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            yield start, chain(basis.reshape(-1, *source_shape)).reshape(stop - start, -1)
