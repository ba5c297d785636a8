"""State dicts with published key names and random values, for strict-loading tests."""

from __future__ import annotations

import torch


def random_state(
    shapes: dict[str, tuple[int, ...]], seed: int = 0, tracked: int = 123, scale: float = 0.1
) -> dict[str, torch.Tensor]:
    """A state dict with the given keys and shapes: BN counters ``tracked`` (int64 scalars),
    running variances in [0.5, 1.5), everything else N(0, scale^2); seeded."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(tracked, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * scale
    return state
