"""The searched solver's free parameters and the map to (time grid, coefficient matrix).

Exactly the paper's parameterisation (Algorithm 1): ``N`` logits ``r`` give the step sizes ``softmax(r)`` (positive,
summing to the whole time span), and the strictly lower-triangular ``c`` gives the mixing matrix
``M[i, j] = c[i, j]`` (j < i), ``M[i, i] = 1 - sum_j c[i, j]``, so every row sums to 1.  ``r = const, c = 0`` is
Euler (rectified flow) / DDIM (VP) on the uniform grid.  A mask fixes some ``c`` to zero: for ``N <= 6`` the last
two rows may only use the previous prediction (the paper's "order limit").
"""

from __future__ import annotations

import torch

from ..conventions import Schedule


def order_limit_mask(n: int, limit: bool) -> torch.Tensor:
    mask = torch.tril(torch.ones(n, n, dtype=torch.float64), diagonal=-1)
    if limit:
        for i in (n - 2, n - 1):
            if i >= 1:
                mask[i, :] = 0.0
                mask[i, i - 1] = 1.0
    return mask


def times_from_logits(r: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """``N + 1`` times from ``N`` logits: start at the noise end, end exactly at the data end."""
    t0, t1 = schedule.t_noise, schedule.t_data
    inner = t0 + (t1 - t0) * torch.cumsum(torch.softmax(r.to(torch.float64), 0), 0)[:-1]
    return torch.cat([r.new_tensor([t0], dtype=torch.float64), inner, r.new_tensor([t1], dtype=torch.float64)])


def matrix_from_coeffs(c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    strict = c.to(torch.float64) * mask
    return strict + torch.diag(1.0 - strict.sum(1))


def logits_from_times(times: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`times_from_logits` (up to the softmax's additive constant)."""
    deltas = (times[1:] - times[:-1]).abs()
    return torch.log(deltas / deltas.sum())


def coeffs_from_matrix(M: torch.Tensor) -> torch.Tensor:
    return torch.tril(M.to(torch.float64), diagonal=-1)
